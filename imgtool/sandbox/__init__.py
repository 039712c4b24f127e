"""The namespaced, cgroup-limited sandbox that `imgtool run` and the builder's RUN steps use."""
