// Drives solcjs for scripts/solc. Usage:
//   node solc-js.cjs --version
//   node solc-js.cjs --standard-json IN OUT BASE_PATH [INCLUDE_PATH...]
"use strict";
const fs = require("fs");
const path = require("path");
const root = process.env.SOLC_ROOT || path.resolve(__dirname, "..");
const solc = require(path.join(root, "node_modules", "solc"));

if (process.argv[2] === "--version") {
  const v = solc.version().replace(/\.Emscripten\.clang$/, "");
  process.stdout.write("solc, the solidity compiler commandline interface\nVersion: " + v + "\n");
  process.exit(0);
}

const [, , , inFile, outFile, basePath, ...includePaths] = process.argv;
const searchRoots = [basePath, ...includePaths].map((p) => path.resolve(p));

function findImports(importPath) {
  for (const r of searchRoots) {
    const candidate = path.resolve(r, importPath);
    if (!candidate.startsWith(r + path.sep)) continue;
    if (fs.existsSync(candidate)) {
      return { contents: fs.readFileSync(candidate, "utf8") };
    }
  }
  return { error: "File not found: " + importPath };
}

const input = fs.readFileSync(inFile, "utf8");
const output = solc.compile(input, { import: findImports });
fs.writeFileSync(outFile, output);
