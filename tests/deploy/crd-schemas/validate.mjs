// Reads a JSON list of Kubernetes objects on stdin and validates each KEDA object against KEDA's own
// CRD schema (the @kubernetes-models/keda models, generated from KEDA's CRDs). Prints one JSON line per
// object: {"kind", "name", "error"} with error null when valid. Exits 2 on a kind it has no model for.
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { ScaledJob } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledJob";
import { TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication";

const MODELS = { ScaledObject, ScaledJob, TriggerAuthentication };
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
let unknown = false;
for (const obj of JSON.parse(Buffer.concat(chunks).toString("utf8"))) {
  const Model = MODELS[obj.kind];
  if (!Model || obj.apiVersion !== "keda.sh/v1alpha1") {
    unknown = true;
    console.log(JSON.stringify({ kind: obj.kind, name: obj.metadata?.name, error: `no KEDA model for ${obj.apiVersion} ${obj.kind}` }));
    continue;
  }
  let error = null;
  try {
    new Model(obj).validate();
  } catch (e) {
    error = String(e.message ?? e);
  }
  console.log(JSON.stringify({ kind: obj.kind, name: obj.metadata?.name, error }));
}
process.exit(unknown ? 2 : 0);
