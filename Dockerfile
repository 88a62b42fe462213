# The base image: any Debian-like image with Python >= 3.11 and its venv module. The default comes
# from a registry; `make image-test` builds FROM a Debian it bootstraps locally instead.
ARG BASE=python:3.11-slim

# Build stage: install the package and its dependencies into a virtual environment.
FROM ${BASE} AS build
WORKDIR /src
RUN python3 -m venv /opt/interlock
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN /opt/interlock/bin/pip install --no-cache-dir .

# Runtime stage: only the virtual environment, the examples and the default config; no compilers.
FROM ${BASE}
# /data is the one place the gateway writes (the embedded SQLite state): a volume, owned by the
# user the image runs as. A named volume copies that ownership; a bind-mounted folder must be
# writable by uid 10001.
RUN useradd --system --uid 10001 --create-home interlock \
    && mkdir /data && chown interlock:interlock /data
COPY --from=build /opt/interlock /opt/interlock
WORKDIR /app
COPY servers.toml ./
COPY policies ./policies
COPY examples ./examples
ENV PATH="/opt/interlock/bin:$PATH" PYTHONUNBUFFERED=1 \
    INTERLOCK_STATE="sqlite:////data/interlock-state.db"
VOLUME /data
USER interlock
EXPOSE 8080
# `interlock health` asks the port the config names, so a config with another port keeps working.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["interlock", "health", "--config", "servers.toml"]
CMD ["interlock", "serve", "--config", "servers.toml", "--host", "0.0.0.0"]
