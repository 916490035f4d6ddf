"""The Image service: signed manifests, an immutable content-addressed store,
images served by block, confidential images."""
