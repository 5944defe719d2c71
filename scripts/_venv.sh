# Sourced by demo.sh and test.sh: make .venv and install p2pmr into it, with
# every package (pip and the build tools too) at its version in constraints.txt.
# Skipped when .venv already holds what the same constraints.txt, setup.cfg and
# pyproject.toml install.
#
#   ensure_venv EXTRA [PACKAGE...]   EXTRA: an extra of p2pmr ("" for none);
#                                    PACKAGEs are installed without dependencies.
ensure_venv() {
    local extra="$1"
    shift
    local python="${PYTHON:-python3}"
    [ -x .venv/bin/python ] || "$python" -m venv .venv
    local stamp=".venv/.p2pmr-installed${extra:+-$extra}"
    local want
    want="$(cat constraints.txt setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1) $*"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return
    fi
    local pip=(.venv/bin/python -m pip install --quiet --constraint constraints.txt)
    # The build backend warns about editable installs on every build: noise here.
    PYTHONWARNINGS=ignore "${pip[@]}" --upgrade pip
    PYTHONWARNINGS=ignore "${pip[@]}" --build-constraint constraints.txt -e ".${extra:+[$extra]}"
    if [ "$#" -gt 0 ]; then
        "${pip[@]}" --no-deps "$@"
    fi
    echo "$want" > "$stamp"
}
