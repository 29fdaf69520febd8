#!/usr/bin/env bash
# Scans what the test suite's daemons and warpdrive-ctl runs wrote (their logs and outputs,
# kept under target/test-output/ by the integration tests) for secrets that must never be
# printed: the emulators' keys, the test kit's issued credentials, bearer tokens (JWTs),
# SAS signatures. Exit 1, naming file and line, if any is found.
set -euo pipefail
dir="${1:-target/test-output}"
if [ ! -d "$dir" ]; then
    echo "scan-secrets: nothing to scan in $dir (run the tests first)" >&2
    exit 1
fi
files=$(find "$dir" -type f | wc -l)
patterns=(
    'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq'  # Azurite's account key
    'eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}'                      # a JWT (bearer token)
    '[?&]sig=[A-Za-z0-9%+/=]{10,}'                                    # a SAS signature
    'test-secret-[0-9]+'                                              # IMDS emulator's secret keys
    'test-session-token-[0-9]+'                                       # ... and session tokens
    'ya29\.test-token'                                                # GCP metadata tokens
    'Bearer [A-Za-z0-9._~+/-]{16,}'                                   # any bearer token
    '0123456789abcdef0123456789abcdef'                                # the control API test token
)
found=0
for p in "${patterns[@]}"; do
    if grep -rEn -- "$p" "$dir" >/tmp/scan-secrets.$$ 2>/dev/null; then
        echo "scan-secrets: a secret matching /$p/ was printed:" >&2
        head -5 /tmp/scan-secrets.$$ >&2
        found=1
    fi
done
rm -f /tmp/scan-secrets.$$
if [ "$found" = 1 ]; then
    exit 1
fi
echo "scan-secrets: $files logs and outputs of the test suite hold no secret"
