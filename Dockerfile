# syntax=docker/dockerfile:1
#
# Imaging Hub. By default one container runs everything (`imaging-hub serve`) with the
# embedded profile: SQLite index, local storage and a server-less broker, all under /data.
# docker-compose.yml runs the same image as separate `imaging-hub scp`, `api`, `worker` and
# `db upgrade` containers for the scale-out profile (PostgreSQL + Redis).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Only what the package needs: keeps a local .venv and test data out of the image.
COPY pyproject.toml README.md ./
COPY imaging_hub ./imaging_hub
COPY dicom_scp ./dicom_scp
COPY viewer_api ./viewer_api
COPY workers ./workers
RUN pip install .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HUB_DATA_DIR=/data \
    HUB_HTTP_HOST=0.0.0.0
RUN useradd --system --user-group --uid 10001 --home-dir /data --no-create-home hub \
    && mkdir /data \
    && chown hub:hub /data
COPY --from=build /opt/venv /opt/venv
# Numeric, so that orchestrators can verify the user is not root (runAsNonRoot).
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# DICOM receiver (HUB_DICOM_PORT) and HTTP API / web UI (HUB_HTTP_PORT).
EXPOSE 11112 8000
CMD ["imaging-hub", "serve"]
