# Sourced by the shell benchmarks: find_py310 prints a CPython 3.10 (pyenv, then uv, then PATH).
find_py310() {
  if command -v pyenv >/dev/null && p=$(pyenv prefix 3.10 2>/dev/null); then echo "$p/bin/python3.10"; return; fi
  if p=$(uv python find --no-python-downloads 3.10 2>/dev/null); then echo "$p"; return; fi
  command -v python3.10
}
