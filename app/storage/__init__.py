"""Object storage: one small protocol (:mod:`.base`), a filesystem and an S3 backend."""
