# One image for web and workers. GPU workers run it with the NVIDIA runtime (see
# docker-compose.yml); torch's CUDA build is the default wheel on x86_64.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends libpq5 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config ./config
COPY labeling ./labeling
COPY mlcore ./mlcore
COPY bench ./bench
COPY templates ./templates
COPY static ./static
COPY locale ./locale
COPY manage.py ./
RUN pip install -e . && useradd --create-home app && mkdir -p /app/var && chown app /app/var
USER app
ENV DJANGO_SETTINGS_MODULE=config.settings.production
RUN DJANGO_SECRET_KEY=build-only-collectstatic-key-not-used-at-runtime-000000000000000 \
    python manage.py collectstatic --noinput
EXPOSE 8000
CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "4", "--threads", "4"]
