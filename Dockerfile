# syntax=docker/dockerfile:1
# The nats-mesh image: one `mesh` binary on a small Debian base, run as a non-root user, and the
# web console's static build (web/dist), which the edge serves at /console/ (MESH_CONSOLE_DIR).
#   docker build --build-arg MESH_GIT_COMMIT="$(git rev-parse --short=12 HEAD)" -t nats-mesh:0.1.0 .
# The Helm chart (helm/nats-mesh) runs it with `command: [/usr/local/bin/mesh]` and the role as
# the argument; its root filesystem can be read-only (the binary writes nothing but logs to stderr).

# The console: the locked toolchain (web/package-lock.json), types generated from web/spec/,
# type-checked and bundled into static files.
FROM node:22-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY web/ ./
RUN npm run build

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
ARG MESH_GIT_COMMIT=unknown
ENV MESH_GIT_COMMIT=${MESH_GIT_COMMIT}
# Cache mounts keep the registry and build output between builds; the binary leaves via /out.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin mesh \
 && install -D -m 0755 target/release/mesh /out/mesh

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 mesh \
 && useradd --system --uid 10001 --gid mesh --no-create-home --shell /usr/sbin/nologin mesh
COPY --from=build /out/mesh /usr/local/bin/mesh
COPY --from=web /web/dist /usr/share/nats-mesh/console
ENV MESH_CONSOLE_DIR=/usr/share/nats-mesh/console
USER 10001:10001
EXPOSE 8080 9100
ENTRYPOINT ["/usr/local/bin/mesh"]
CMD ["all"]
