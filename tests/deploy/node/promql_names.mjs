// Parses PromQL expressions with Prometheus's own grammar (lezer-promql) and
// prints what each refers to. Input on stdin: a JSON array of {source, expr}.
// Output on stdout: a JSON array of {source, expr, error, selectors, grouping}
// where selectors are [{metric, matchers: [{label, op, value}]}] and grouping
// the label names of by/without/on/ignoring/group_left/group_right clauses.
import { readFileSync } from "node:fs";
import { parser } from "@prometheus-io/lezer-promql";

const input = JSON.parse(readFileSync(0, "utf8"));

function text(expr, node) {
  return expr.slice(node.from, node.to);
}

function unquote(s) {
  // PromQL string literals: "..." or '...' with Go escapes, or `...` raw.
  if (s.startsWith("`")) return s.slice(1, -1);
  return JSON.parse('"' + s.slice(1, -1).replace(/\\'/g, "'").replace(/"/g, '\\"') + '"');
}

function children(node) {
  const out = [];
  for (let c = node.firstChild; c; c = c.nextSibling) out.push(c);
  return out;
}

function analyse(expr) {
  const tree = parser.parse(expr);
  const selectors = [];
  const grouping = new Set();
  let error = null;
  tree.iterate({
    enter(ref) {
      const node = ref.node;
      if (node.type.isError && error === null) {
        error = `syntax error at offset ${node.from}: ${JSON.stringify(expr.slice(node.from, node.from + 20))}`;
      }
      if (node.name === "VectorSelector") {
        const sel = { metric: null, matchers: [] };
        for (const c of children(node)) {
          if (c.name === "Identifier") sel.metric = text(expr, c);
          if (c.name === "LabelMatchers") {
            for (const m of children(c)) {
              if (m.name !== "UnquotedLabelMatcher" && m.name !== "QuotedLabelMatcher") {
                if (m.name === "QuotedLabelName") sel.metric = unquote(text(expr, m));
                continue;
              }
              const parts = children(m);
              const labelNode = parts.find((p) => p.name === "LabelName" || p.name === "QuotedLabelName");
              const opNode = parts.find((p) => p.name === "MatchOp");
              const valueNode = parts.find((p) => p.name === "StringLiteral");
              let label = text(expr, labelNode);
              if (labelNode.name === "QuotedLabelName") label = unquote(label);
              const value = unquote(text(expr, valueNode));
              if (label === "__name__" && text(expr, opNode) === "=") {
                sel.metric = value;
                continue;
              }
              sel.matchers.push({ label, op: text(expr, opNode), value });
            }
          }
        }
        selectors.push(sel);
      }
      if (node.name === "GroupingLabels") {
        for (const c of children(node)) {
          if (c.name === "LabelName") grouping.add(text(expr, c));
          if (c.name === "QuotedLabelName") grouping.add(unquote(text(expr, c)));
        }
      }
    },
  });
  return { error, selectors, grouping: [...grouping].sort() };
}

const out = input.map(({ source, expr }) => ({ source, expr, ...analyse(expr) }));
process.stdout.write(JSON.stringify(out, null, 1) + "\n");
