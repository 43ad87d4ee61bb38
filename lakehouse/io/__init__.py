"""Where the lakehouse's data lives and how it is read and written: the settings (one URI), one
pyarrow filesystem for a folder or an S3 prefix, Delta Lake reads and writes, and storage errors as
people read them."""
