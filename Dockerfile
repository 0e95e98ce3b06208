# capa-refresher container image: make image (or docker build -t capa-refresher .)
#
# Build stage: a release build of the refresher only (the policy ships as a wasm module, not here).
# CI runs this stage's RUN commands as a script (.ci/dockerfile-build-stage), since there is no
# container engine on the CI machine.
FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
ARG DIST=/dist
RUN cargo build --release --locked -p capa-refresher
RUN mkdir -p "${DIST}" \
 && cp "${CARGO_TARGET_DIR:-target}/release/capa-refresher" "${DIST}/capa-refresher" \
 && strip "${DIST}/capa-refresher" \
 && "${DIST}/capa-refresher" --version

# Runtime: distroless (glibc, CA certificates, no shell, no package manager), non-root user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /dist/capa-refresher /usr/local/bin/capa-refresher
USER 65532:65532
EXPOSE 8080 9440
ENTRYPOINT ["/usr/local/bin/capa-refresher"]
