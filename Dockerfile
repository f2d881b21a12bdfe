# RecoLab's one image: the BentoML service (default command), the flow server
# (`recolab deploy`) and, in docker-compose.yml, the MLflow tracking server.
#   docker build -t recolab .
#   docker run -p 3000:3000 -e RECOLAB_DATABASE_URL=... -e MLFLOW_TRACKING_URI=... recolab
# CPU build of PyTorch; for NVIDIA GPUs build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=1 \
    BENTOML_DO_NOT_TRACK=true \
    MLFLOW_ENABLE_TELEMETRY=false \
    GX_ANALYTICS_ENABLED=false \
    RECOLAB_DATA_DIR=/app/data

WORKDIR /app

# Dependencies first (a layer that survives code changes): install the project against
# empty package stubs, then copy the real code over them (the install is editable, so
# configs/ resolves next to the code).
COPY pyproject.toml constraints.txt README.md ./
RUN pip install --extra-index-url "$TORCH_INDEX" -c constraints.txt torch==2.13.0 \
    && mkdir -p recolab flows serving \
    && touch recolab/__init__.py flows/__init__.py serving/__init__.py \
    && pip install -c constraints.txt -e .

COPY recolab recolab
COPY flows flows
COPY serving serving
COPY configs configs
COPY prefect.yaml ./

RUN useradd --create-home --uid 1000 recolab \
    && mkdir -p /app/data \
    && chown -R recolab /app/data
USER recolab

EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=5 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/livez', timeout=4)"
CMD ["recolab", "serve", "--host", "0.0.0.0", "--port", "3000"]
