#!/bin/bash
# The image's HEALTHCHECK: exits 0 when the server's /health answers 200. The slim image has no
# curl or wget, and installing one only for this would grow the image, so this speaks HTTP/1.0
# through bash's /dev/tcp (Debian's bash has it) to the address and port the server listens on.
set -eu
host=${LORAMUX_HOST:-127.0.0.1}
case $host in
    0.0.0.0 | "") host=127.0.0.1 ;;
    :: | "[::]") host=::1 ;;
esac
exec 3<>"/dev/tcp/$host/${LORAMUX_PORT:-8080}"
printf 'GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
read -r -t 5 _ code _ <&3
[ "$code" = 200 ]
