// Finds fields the Kubernetes API does not know (what the API server's strict
// field validation refuses, and the schemas of validate_k8s.mjs let through):
// each object becomes an object literal typed by its kubernetes-models
// interface, and TypeScript's excess-property check reports every field that
// interface lacks. Input on stdin: a JSON array of {source, object}. Prints
// "SOURCE: message" per problem and exits 1 if there is any.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const here = dirname(fileURLToPath(import.meta.url));
const input = JSON.parse(readFileSync(0, "utf8"));

function modulePath(apiVersion, kind) {
  if (apiVersion.startsWith("monitoring.coreos.com/")) {
    return `@kubernetes-models/prometheus-operator/${apiVersion}/${kind}`;
  }
  return `kubernetes-models/${apiVersion}/${kind}`;
}

const lines = [];
input.forEach(({ object }, i) => {
  lines.push(`import type { I${object.kind} as T${i} } from "${modulePath(object.apiVersion, object.kind)}";`);
});
input.forEach(({ object }, i) => {
  lines.push(`export const o${i}: T${i} = ${JSON.stringify(object)};`);
});
const dir = mkdtempSync(join(here, "strict-"));
const file = join(dir, "objects.mts");
writeFileSync(file, lines.join("\n") + "\n");
const program = ts.createProgram([file], {
  strict: true, noEmit: true, skipLibCheck: true, target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext,
});
const diagnostics = ts.getPreEmitDiagnostics(program);
rmSync(dir, { recursive: true, force: true });
let failed = 0;
for (const d of diagnostics) {
  const message = ts.flattenDiagnosticMessageText(d.messageText, " ");
  let source = "?";
  if (d.file && d.start !== undefined) {
    const line = d.file.getLineAndCharacterOfPosition(d.start).line;
    const index = line - input.length;
    source = index >= 0 && index < input.length ? input[index].source : `line ${line + 1}`;
  }
  console.log(`${source}: ${message}`);
  failed++;
}
process.exit(failed > 0 ? 1 : 0);
