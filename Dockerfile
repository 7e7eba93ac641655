# fooocus-es for CUDA hosts.
#   docker build -t fooocus-es .            (or: docker compose up -d --build)
#   docker run --gpus all -p 7866:7866 -v fooocus-data:/data fooocus-es
#
# torch's CUDA wheels bring the CUDA user-space libraries with them; the host needs only the NVIDIA
# driver and the NVIDIA Container Toolkit. So a plain Python image is the base, not nvidia/cuda
# (which would carry a second copy of those libraries).
FROM python:3.11-slim-bookworm

# pyproject pins torch==2.14.1 and torchvision==0.29.1 (PyPI's CUDA 13 builds); another CUDA build of
# the same versions can come from the PyTorch index of your choice (cu126, cu128, cu130, ...).
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    FOOOCUS_ES_HOST=0.0.0.0 \
    FOOOCUS_ES_DATA_DIR=/data

WORKDIR /app

# torch first (its own layer: gigabytes that rarely change), then the project with torch held to it.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
    && printf 'torch==%s\ntorchvision==%s\n' "${TORCH_VERSION}" "${TORCHVISION_VERSION}" > /tmp/constraints.txt

COPY pyproject.toml README.md ./
COPY migrations ./migrations
COPY src ./src
# migrations/ is needed at build time: src/fooocus_es/migrations links to it and the wheel copies it.
RUN pip install -c /tmp/constraints.txt . \
    && useradd --create-home --uid 1000 fooocus \
    && mkdir -p /data \
    && chown fooocus:fooocus /data

USER fooocus
# outputs/ (event log + images), inputs/, models/ (checkpoints, loras, vae), presets/
VOLUME ["/data"]
EXPOSE 7866

HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:7866/health', headers={'X-API-KEY': os.environ.get('FOOOCUS_ES_API_KEY', '')}), timeout=4)"

CMD ["fooocus-es", "serve", "--host", "0.0.0.0", "--data-dir", "/data"]
