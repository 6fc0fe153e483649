# syntax=docker/dockerfile:1
# meshd in a container: one static binary on a minimal base.
#   docker build -t meshd .
#   docker run -d --name meshd -p 33073:33073/tcp -p 8443:8443/tcp -p 3478:3478/udp -p 3478:3478/tcp \
#     -p 49152-49300:49152-49300/udp -v meshd-data:/var/lib/meshd \
#     meshd all --data /var/lib/meshd --public-url https://vpn.example.org:33073 \
#     --relay-ports 49152-49300 --relay-ip 203.0.113.10
# The relayed ports (--relay-ports) must be published like the others (a
# small range: Docker maps each port). Behind Docker's NAT the container's
# own address is private: --relay-ip is the host's public IPv4 address
# (without it the relay resolves the --public-url host name).
# An agent in a container needs --cap-add NET_ADMIN --device /dev/net/tun
# (or --wg-mode netstack).

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X meshd/internal/version.Version=${VERSION}" \
      -o /out/meshd .

FROM gcr.io/distroless/static-debian12 AS run
COPY --from=build /out/meshd /usr/local/bin/meshd
# The server's state lives here; mount a volume to keep it across upgrades.
VOLUME ["/var/lib/meshd"]
EXPOSE 33073/tcp 8443/tcp 3478/udp 3478/tcp 49152-49300/udp
ENTRYPOINT ["/usr/local/bin/meshd"]
CMD ["all", "--data", "/var/lib/meshd"]
