// Prints a rendered chart (YAML documents) as one JSON array, for tests that read it.
//   node render-json.mjs RENDERED.yaml
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

const docs = parseAllDocuments(readFileSync(process.argv[2], "utf8"))
  .map((d) => d.toJS())
  .filter(Boolean);
process.stdout.write(JSON.stringify(docs));
