# Sourced by bin/xenos and bin/xenosd (and scripts/setup.sh) with $root set to the checkout or the
# installed package: the Node to run, and which form of an entry point it runs.
node="$root/node_modules/node/bin/node"
[ -x "$node" ] || node=node

# Whether dist/ was compiled after the last change to src/ and tsconfig (scripts/build.sh).
build_is_fresh () {
  [ -f "$root/dist/.built" ] && [ -z "$(find "$root/src" "$root"/tsconfig*.json -newer "$root/dist/.built" -print -quit 2>/dev/null)" ]
}

# entry cli/NAME: dist/cli/NAME.js while the build is fresh, else the sources, src/cli/NAME.ts.
entry () {
  if build_is_fresh; then echo "$root/dist/$1.js"; else echo "$root/src/$1.ts"; fi
}
