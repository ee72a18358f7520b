# Sourced by the generate_*.sh drivers: each variable is checked before Python starts, so a
# mistake is one line naming the variable (the generator itself names its --options).

_fail() {
    echo "$(basename "$0"): error: $*" >&2
    exit 2
}

# need_int NAME MIN: a whole number >= MIN (more than 18 digits is taken as large enough)
need_int() {
    local value=${!1}
    if ! [[ $value =~ ^[0-9]+$ ]] || ! (( ${#value} > 18 || 10#$value >= $2 )); then
        _fail "$1=$value is not allowed; expected a whole number >= $2"
    fi
}

# need_number NAME: a decimal number such as 0.1, 3.5 or 1e-3 (its range is the generator's to check)
need_number() {
    local value=${!1}
    if ! [[ $value =~ ^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$ ]]; then
        _fail "$1=$value is not allowed; expected a number"
    fi
}

# need_python: PYTHON runs (the drivers find .venv/bin/python or python3 when it is unset)
need_python() {
    command -v "$PYTHON" >/dev/null 2>&1 || _fail "PYTHON=$PYTHON is not a program here; set PYTHON to an interpreter with onepfrac installed"
}
