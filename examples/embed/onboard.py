"""A Python host of libcmkflow through ctypes (any FFI works the same way): onboards one customer
end to end through the C API and prints the run as JSON.

    CMKFLOW_EMULATOR=https://127.0.0.1:PORT CMKFLOW_EMULATOR_CA=ca.pem ISV_TENANT=... (as onboard.c)
    CMKFLOW_LIB=/usr/local/lib/libcmkflow.so python3 onboard.py contoso
"""
import ctypes
import os
import sys


class CredentialSpec(ctypes.Structure):
    # struct cmkflow_credential_spec (core/include/cmkflow.h): size first, fields in order
    _fields_ = [("size", ctypes.c_size_t)] + [(name, ctypes.c_char_p) for name in (
        "kind", "tenant_id", "client_id", "client_secret", "certificate_path", "certificate_password",
        "federated_token_file", "identity_client_id")]


def main():
    lib = ctypes.CDLL(os.environ.get("CMKFLOW_LIB", "libcmkflow.so.0"))
    lib.cmkflow_host_new.restype = ctypes.c_void_p
    lib.cmkflow_host_result_json.restype = ctypes.c_char_p
    lib.cmkflow_host_last_error_json.restype = ctypes.c_char_p
    h = ctypes.c_void_p(lib.cmkflow_host_new())  # an opaque handle: bytes go as char *, None as NULL
    env = lambda k: (os.environ.get(k) or "").encode() or None
    emulator = env("CMKFLOW_EMULATOR")
    lib.cmkflow_host_set_cloud(h, b"emulator" if emulator else b"azure", emulator, env("CMKFLOW_EMULATOR_CA"))
    for context, prefix in ((b"isv", "ISV"), (b"customer", "CUSTOMER")):
        spec = CredentialSpec(ctypes.sizeof(CredentialSpec), b"client_secret", env(prefix + "_TENANT"),
                              env(prefix + "_CLIENT"), env(prefix + "_SECRET"))
        if lib.cmkflow_host_set_credential(h, context, ctypes.byref(spec)) != 0:
            print(lib.cmkflow_host_last_error_json(h).decode(), file=sys.stderr)
            return 2
        lib.cmkflow_host_set_subscription(h, context, env(prefix + "_SUBSCRIPTION"))
    params = ('{"customer":"%s"}' % sys.argv[1]).encode()
    rc = lib.cmkflow_host_run_file(h, b"onboard", params)
    out = lib.cmkflow_host_result_json(h) if rc in (0, 6) else lib.cmkflow_host_last_error_json(h)
    print(out.decode())
    lib.cmkflow_host_free(h)
    return rc


if __name__ == "__main__":
    sys.exit(main())
