#!/bin/bash
# The customer kit's az route (docs/handoff.md): the ISV starts onboard with cmkflow and only its own
# credentials, writes the kit (cmkflow handoff), the customer runs the kit's customer.sh unmodified
# with Debian's az CLI in its own profile (the one az.sh logged in), and the ISV finishes with the
# two values the script printed. Run by tools/realclients/run after az.sh; needs EMU_STATE (the
# emulator's state directory) CA WORK VAULT_SUFFIX KIT_VAULT CMKFLOW_BIN and the ISV_* variables.
# Prints "PASS kit: <step>" per step; on the first failure "FAIL kit: <step>: <why>" and exits 1.
set -u

: "${EMU_STATE:?} ${CA:?} ${WORK:?} ${VAULT_SUFFIX:?} ${KIT_VAULT:?} ${CMKFLOW_BIN:?}"
: "${ISV_TENANT:?} ${ISV_SUB:?} ${ISV_APP:?} ${ISV_SECRET:?}"

export REQUESTS_CA_BUNDLE="$CA" AZURE_CORE_COLLECT_TELEMETRY=false AZURE_CORE_SURVEY_MESSAGE=false \
       AZURE_CORE_NO_COLOR=true AZURE_CORE_ONLY_SHOW_ERRORS=true
export CMKFLOW_STATE_DIR="$WORK/kit-isv-state"
ISV_CONFIG="$WORK/kit-isv.lua"

fail() { echo "FAIL kit: $1: $2"; exit 1; }
pass() { echo "PASS kit: $1"; }

[ -d "$WORK/az-customer" ] || fail "customer profile" "az.sh's customer profile is missing (run az first)"

cat >"$ISV_CONFIG" <<LUA
return { cloud = "emulator", emulator_state = "$EMU_STATE",
  isv = { tenant = "$ISV_TENANT", subscription = "$ISV_SUB",
          credential = { client_id = "$ISV_APP", client_secret = "$ISV_SECRET" } } }
LUA

OUT=$("$CMKFLOW_BIN" run onboard --config "$ISV_CONFIG" --param customer=kitco --output json 2>"$WORK/kit.err")
rc=$?
[ "$rc" -eq 6 ] || fail "isv onboard (cmkflow)" "exit $rc, not 6 (waiting at the handoff): $(tail -n 3 "$WORK/kit.err")"
RUN=$(printf '%s' "$OUT" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])')
pass "isv onboard (cmkflow)"

"$CMKFLOW_BIN" handoff "$RUN" --out "$WORK/kit" >/dev/null 2>"$WORK/kit.err" \
    || fail "handoff (cmkflow)" "$(tail -n 3 "$WORK/kit.err")"
[ -f "$WORK/kit/customer.sh" ] || fail "handoff (cmkflow)" "no customer.sh in the kit"
pass "handoff (cmkflow)"

# the script as written in the kit; only the vault's name comes from the environment (in the
# namespace way, its hosts file lists it in advance)
if ! OUT=$(AZURE_CONFIG_DIR="$WORK/az-customer" VAULT="$KIT_VAULT" timeout 150 sh "$WORK/kit/customer.sh" 2>"$WORK/kit.err"); then
    fail "customer.sh (az)" "$(grep -v '^$' "$WORK/kit.err" | tail -n 3 | tr '\n' ' ')"
fi
VAULT_URI=$(printf '%s\n' "$OUT" | sed -n 's/^key_vault_uri: //p')
KEY=$(printf '%s\n' "$OUT" | sed -n 's/^key_name: //p')
[ "$VAULT_URI" = "https://$KIT_VAULT.$VAULT_SUFFIX/" ] || fail "customer.sh (az)" "vault URI '$VAULT_URI'"
[ "$KEY" = cmk-kitco ] || fail "customer.sh (az)" "key name '$KEY'"
printf '%s\n' "$OUT" | grep -qxF "  cmkflow approve $RUN handoff --param key_vault_uri=$VAULT_URI --param key_name=$KEY" \
    || fail "customer.sh (az)" "it does not end with the ISV's approve command: $OUT"
printf '%s\n' "$OUT" | grep -qxF "  cmkflow resume $RUN" || fail "customer.sh (az)" "no resume command: $OUT"
pass "customer.sh (az)"

# again: the same names, nothing new
AZURE_CONFIG_DIR="$WORK/az-customer" VAULT="$KIT_VAULT" timeout 150 sh "$WORK/kit/customer.sh" >/dev/null 2>"$WORK/kit.err" \
    || fail "customer.sh again (az)" "$(grep -v '^$' "$WORK/kit.err" | tail -n 3 | tr '\n' ' ')"
pass "customer.sh again (az)"

# The ISV finishes. It names the vault by the public cloud's host name; in the namespace way the
# emulator routes that to the same vault az reached as NAME.vault.localhost:PORT. Its cmkflow finds
# the emulator through the state directory (cloud = "emulator") and, with HTTPS_PROXY set as for
# az, still goes straight to it.
"$CMKFLOW_BIN" resume "$RUN" --param "key_vault_uri=https://$KIT_VAULT.vault.azure.net/" --param "key_name=$KEY" \
    --output json >"$WORK/kit.out" 2>"$WORK/kit.err"
rc=$?
[ "$rc" -eq 0 ] || fail "isv resume (cmkflow)" "exit $rc: $(tail -c 600 "$WORK/kit.out") $(tail -n 3 "$WORK/kit.err")"
pass "isv resume (cmkflow)"
