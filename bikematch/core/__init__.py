"""The core every layer may use: settings, the database and its migrations, the listing
record and the normalisation of its fields. It imports nothing else of bikematch."""
