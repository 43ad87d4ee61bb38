"""The landing path: the app's daily exports (``lakehouse.contract``) -> bronze Delta tables and the
quarantine; each day is verified against its manifest before anything is read or written."""
