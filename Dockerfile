# syntax=docker/dockerfile:1
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
RUN useradd --create-home --uid 10001 hss
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH HSS_DATA_DIR=/home/hss/data PORT=3000
USER hss
WORKDIR /home/hss
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import os,urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\",\"3000\")}/healthz', timeout=2)"
ENTRYPOINT ["hss-sync-bot"]
CMD ["run"]
