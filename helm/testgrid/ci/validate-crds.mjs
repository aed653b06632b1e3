// Validates the custom resources of a rendered chart (KEDA's ScaledObject and
// TriggerAuthentication, prometheus-operator's ServiceMonitor) against their CRDs' schemas, as
// published on the npm registry by kubernetes-models. kubernetes-validate covers every
// built-in kind; these it cannot know. Any other kind it does not know fails here.
//
//   node validate-crds.mjs RENDERED.yaml   (from a folder where its packages are installed)
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { ScaledObject, TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = {
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "keda.sh/v1alpha1/TriggerAuthentication": TriggerAuthentication,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
};
const builtIn = /^(v1|apps\/v1|policy\/v1|networking\.k8s\.io\/v1)$/;

let failed = 0;
let checked = 0;
for (const doc of parseAllDocuments(readFileSync(process.argv[2], "utf8"))) {
  const object = doc.toJS();
  if (!object) continue;
  const key = `${object.apiVersion}/${object.kind}`;
  const Model = models[key];
  if (!Model) {
    if (!builtIn.test(object.apiVersion)) {
      console.error(`${key} ${object.metadata?.name}: no schema to check it against`);
      failed++;
    }
    continue;
  }
  try {
    new Model(object).validate();
    checked++;
  } catch (e) {
    console.error(`${key} ${object.metadata?.name}: ${e.message}`);
    failed++;
  }
}
console.log(`custom resources: ${checked} valid, ${failed} invalid`);
process.exit(failed ? 1 : 0);
