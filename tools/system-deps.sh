#!/usr/bin/env bash
# The Debian packages the test suite uses, installed when missing (`make deps`, run by `make test`):
# chromium for the browser tests (driven by Playwright), Fashion-MNIST's files (which
# `digitlab data fetch --dataset fashion-mnist` reads), PostgreSQL, whose server the tuning tests start on
# 127.0.0.1, npm, which fetches onnxruntime-web for `digitlab export --format web`, and the handwriting
# fonts of the non-digit suite.
# As root with apt-get, it installs them; otherwise it stops at once with the one command to run.
set -euo pipefail
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
compgen -G '/usr/lib/postgresql/*/bin/initdb' > /dev/null || missing+=(postgresql)
command -v npm > /dev/null || missing+=(npm)
# the handwriting fonts the non-digit suite draws letters with (digitlab.inference.nondigits)
# (folder:package where the package is named otherwise)
for font in humor-sans comic-neue breip femkeklaver sjfonts bwht dancingscript kristi ecolier-court \
    fifthhorseman:dkg-handwriting; do
    compgen -G "/usr/share/fonts/*/${font%%:*}" > /dev/null || missing+=("fonts-${font##*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get > /dev/null; then
    echo "installing the Debian packages the tests use: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" > /dev/null
else
    echo "the tests need Debian packages that are missing; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
