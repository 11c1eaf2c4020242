# Production image: the API under gunicorn (`serve`) and the workers (`worker ...`) share it.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    REFERRAL_HOME=/var/lib/referral-service

WORKDIR /app
COPY pyproject.toml README.md ./
COPY referral_service ./referral_service
COPY workers ./workers
COPY schemas ./schemas
COPY migrations ./migrations
# Compile the Urdu catalogue before installing, so the .mo files ship as package data.
RUN pip install babel==2.18.0 \
    && pybabel -q compile -d referral_service/translations \
    && pip install .

# Never run as root: the keyring and the data are the service's alone.
RUN useradd --system --uid 10001 --home-dir /var/lib/referral-service --create-home referral
USER referral

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
ENTRYPOINT ["referral-service"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "4"]
