#!/usr/bin/env bash
# Checks the chart offline: helm lint --strict and helm template with the default values and
# with every values file here (the chart-testing convention), each rendered manifest against
# the Kubernetes schemas (kubernetes-validate --strict) and the custom resources against
# their CRDs (validate-crds.mjs); a mistyped value must fail at install.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
chart=$(dirname "$here")
repo=$(cd "$chart/../.." && pwd)
"$here/tools.sh"
tools="$repo/target/tools"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

for values in "$here"/*-values.yaml; do
    name=$(basename "$values" .yaml)
    echo "chart: $name"
    "$tools/helm" lint --strict "$chart" -f "$values" --quiet
    "$tools/helm" template testgrid "$chart" -f "$values" --namespace ci > "$out/$name.yaml"
    "$tools/kv/bin/kubernetes-validate" --strict --quiet "$out/$name.yaml" 2> "$out/$name.warn" || {
        cat "$out/$name.warn" >&2
        exit 1
    }
    # Only the custom resources may lack a built-in schema; validate-crds.mjs checks them.
    if grep -v -E "kind (ScaledObject|TriggerAuthentication|ServiceMonitor) " "$out/$name.warn" | grep -q .; then
        cat "$out/$name.warn" >&2
        exit 1
    fi
    (cd "$tools/crd" && node validate-crds.mjs "$out/$name.yaml")
done

# The schema turns a mistyped value away at install.
for bad in "workers.pools[0].slots=two" "coordinator.targetDrain=soon" "keda.enabeld=true" "workers.pools[0].name=GPU_pool"; do
    if "$tools/helm" template testgrid "$chart" --set "$bad" > /dev/null 2>&1; then
        echo "chart: --set $bad was accepted; values.schema.json should refuse it" >&2
        exit 1
    fi
done
echo "chart: ok"
