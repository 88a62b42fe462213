# Build stage: install the package and its dependencies into a virtual environment.
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/interlock
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN /opt/interlock/bin/pip install --no-cache-dir .

# Runtime stage: only the virtual environment, the examples and the default config; no compilers.
FROM python:3.11-slim
RUN useradd --system --uid 10001 --create-home interlock
COPY --from=build /opt/interlock /opt/interlock
WORKDIR /app
COPY servers.toml ./
COPY policies ./policies
COPY examples ./examples
ENV PATH="/opt/interlock/bin:$PATH" PYTHONUNBUFFERED=1
USER interlock
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"
CMD ["interlock", "serve", "--config", "servers.toml", "--host", "0.0.0.0"]
