"""Container and Kubernetes deployment of g2u-serve (Dockerfile, manifests, entrypoint, probes)."""
