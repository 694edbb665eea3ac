# certrotd container image: `docker build -t certrotd .` (README, "Container").
#
# Stage 1 builds the release binary with the pinned lock file. Stage 2 is distroless "cc"
# (glibc and libgcc only): no shell, no package manager, no compiler, and user 65532
# ("nonroot") by default. The image runs `certrotd run`; the configuration is mounted at
# /etc/certrotd/certrotd.toml and the state folder /var/lib/certrotd is a volume, so the
# root file system can be read-only.
#
# Non-root is the default. The one documented exception: next to certbot, whose private
# keys are root-owned 0600, run the container as user 0 with every capability dropped
# (root without CAP_DAC_OVERRIDE reads only files root owns) — see
# deploy/kubernetes/certbot-sidecar.yaml and README, "As a sidecar next to certbot".

FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
    && strip target/release/certrotd \
    && install -d -m 0700 /out/var/lib/certrotd \
    && install -m 0755 target/release/certrotd /out/usr/bin/certrotd -D \
    && chown -R 65532:65532 /out/var/lib/certrotd

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /
USER 65532:65532
ENV CERTROTD_CONFIG=/etc/certrotd/certrotd.toml
VOLUME ["/var/lib/certrotd"]
# [metrics] listen = "0.0.0.0:9466" in the mounted configuration serves /metrics, /healthz.
EXPOSE 9466
ENTRYPOINT ["/usr/bin/certrotd"]
CMD ["run"]
