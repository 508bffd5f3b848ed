# radbridge service image: `radbridge serve` against a model server (TGI, vLLM) and the site's Kafka.
# Base install only (no torch): build with --build-arg EXTRAS=local for an image that also runs serve-model on CPU.
# Build from the repository root: docker build -t radbridge:0.1.0 .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# A venv, copied whole into the final stage: the same base image, so the same paths and the same libc.
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY radbridge ./radbridge
RUN /opt/venv/bin/pip install --no-compile "./${EXTRAS:+[$EXTRAS]}" \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="radbridge" \
      org.opencontainers.image.description="Radiology results from Kafka to draft impressions as preliminary FHIR" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 radbridge \
    && useradd --system --uid 10001 --gid radbridge --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin radbridge
COPY --from=build /opt/venv /opt/venv
# The adapter's manifest gives the scope and prompt template the service checks against (a site may mount its own).
COPY model/manifest.json model/MODEL_CARD.md /opt/radbridge/model/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RADBRIDGE_BACKEND=tgi \
    RADBRIDGE_MANIFEST_FILE=/opt/radbridge/model/manifest.json \
    RADBRIDGE_METRICS_HOST=0.0.0.0 \
    RADBRIDGE_METRICS_PORT=9400
WORKDIR /opt/radbridge
USER 10001:10001
EXPOSE 9400
# /healthz is 200 while the consumer loop turns (readiness, /readyz, is for the orchestrator's traffic decisions).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('RADBRIDGE_METRICS_PORT', '9400'), timeout=4)"]
ENTRYPOINT ["radbridge"]
CMD ["serve"]
