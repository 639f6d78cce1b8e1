"""The batch embedding job: listings' images and titles into vector_storage."""

#: Failed attempts after which a listing is no longer pending (kept light: `db status`
#: reads it without loading the embedder's model code).
MAX_ATTEMPTS = 5
