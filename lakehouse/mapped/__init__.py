"""The bring-your-own-data path: a dataset described by a mapping file -> bronze
``mapped_interactions``, ``mapped_users`` and ``mapped_items``, every file read, checked and staged
in bounded memory before one Delta commit per table (:mod:`lakehouse.mapped.importer`)."""
