// Validates Kubernetes objects against the Kubernetes API schemas
// (kubernetes-models) and prometheus-operator's (ServiceMonitor,
// PrometheusRule). Input on stdin: a JSON array of {source, object}. Prints
// one line per object ("ok SOURCE KIND NAME" or "error SOURCE ...") and exits
// 1 if any object is invalid or of a kind with no schema here.
import { readFileSync } from "node:fs";

const input = JSON.parse(readFileSync(0, "utf8"));

// apiVersion "apps/v1" -> module path "kubernetes-models/apps/v1/KIND".
function modulePath(apiVersion, kind) {
  if (apiVersion.startsWith("monitoring.coreos.com/")) {
    return `@kubernetes-models/prometheus-operator/${apiVersion}/${kind}`;
  }
  return `kubernetes-models/${apiVersion}/${kind}`;
}

let failed = 0;
for (const { source, object } of input) {
  const where = `${source} ${object?.kind ?? "?"} ${object?.metadata?.name ?? "?"}`;
  if (typeof object?.apiVersion !== "string" || typeof object?.kind !== "string") {
    console.log(`error ${where}: no apiVersion or kind`);
    failed++;
    continue;
  }
  let Model;
  try {
    const mod = await import(modulePath(object.apiVersion, object.kind));
    Model = mod[object.kind] ?? mod.default;
  } catch (e) {
    console.log(`error ${where}: no schema for ${object.apiVersion} ${object.kind}`);
    failed++;
    continue;
  }
  try {
    new Model(object).validate();
    console.log(`ok ${where}`);
  } catch (e) {
    console.log(`error ${where}: ${e.message}`);
    failed++;
  }
}
process.exit(failed > 0 ? 1 : 0);
