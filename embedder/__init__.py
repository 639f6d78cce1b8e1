"""The batch embedding job: listings' images and titles into vector_storage."""
