"""Offline checks of deploy/kubernetes that kubernetes-validate cannot make.

Run with the interpreter of the venv `cargo xtask setup` makes
(/opt/iolens-venv): it has PyYAML and jsonschema, kubernetes-validate's own
dependencies.

  servicemonitor FILE...   validate ServiceMonitors against
                           servicemonitor-v1.schema.json (a CRD has no
                           schema in kubernetes-validate)
  promconfig IN OUT        check every kubernetes_sd_configs entry of a
                           Prometheus config against the fields Prometheus
                           documents, then write OUT with each replaced by a
                           static target, for a promtool built without
                           Kubernetes discovery (Debian's)

Prints one line per object checked; exits 1 on the first failure.
"""

import json
import pathlib
import sys

import jsonschema
import yaml

HERE = pathlib.Path(__file__).resolve().parent

# Prometheus's kubernetes_sd_config (docs: configuration.md, v2.42 to v3).
K8S_SD_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["role"],
    "properties": {
        "role": {"enum": ["node", "service", "pod", "endpoints", "endpointslice", "ingress"]},
        "api_server": {"type": "string"},
        "kubeconfig_file": {"type": "string"},
        "namespaces": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "own_namespace": {"type": "boolean"},
                "names": {"type": "array", "items": {"type": "string"}},
            },
        },
        "selectors": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["role"],
                "properties": {
                    "role": {"enum": ["node", "service", "pod", "endpoints", "endpointslice", "ingress"]},
                    "label": {"type": "string"},
                    "field": {"type": "string"},
                },
            },
        },
        "attach_metadata": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"node": {"type": "boolean"}},
        },
    },
}


def fail(msg):
    print(f"FAIL {msg}")
    sys.exit(1)


def servicemonitors(paths):
    schema = json.loads((HERE / "servicemonitor-v1.schema.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    seen = 0
    for path in paths:
        for doc in yaml.safe_load_all(pathlib.Path(path).read_text()):
            if not doc:
                continue
            if doc.get("kind") != "ServiceMonitor":
                fail(f"{path}: {doc.get('kind')} is not a ServiceMonitor")
            errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
            if errors:
                e = errors[0]
                fail(f"{path}: servicemonitor/{doc['metadata'].get('name')}: "
                     f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message}")
            print(f"PASS {path}: servicemonitor/{doc['metadata']['name']} against the ServiceMonitor v1 schema")
            seen += 1
    if seen == 0:
        fail("no ServiceMonitor found")


def promconfig(src, dst):
    config = yaml.safe_load(pathlib.Path(src).read_text())
    validator = jsonschema.Draft7Validator(K8S_SD_SCHEMA)
    replaced = 0
    for job in config.get("scrape_configs", []):
        sds = job.pop("kubernetes_sd_configs", None)
        if sds is None:
            continue
        for i, sd in enumerate(sds):
            errors = list(validator.iter_errors(sd))
            if errors:
                fail(f"{src}: job {job['job_name']}: kubernetes_sd_configs[{i}]: {errors[0].message}")
            print(f"PASS {src}: job {job['job_name']}: kubernetes_sd_configs[{i}] (role {sd['role']})")
        # A documentation address (RFC 5737): promtool only parses it.
        job.setdefault("static_configs", []).append({"targets": ["192.0.2.1:9464"]})
        replaced += 1
    if replaced == 0:
        fail(f"{src}: no kubernetes_sd_configs to check")
    pathlib.Path(dst).write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"WROTE {dst}: {replaced} job(s) with static targets for promtool")


def main(argv):
    if len(argv) >= 2 and argv[0] == "servicemonitor":
        servicemonitors(argv[1:])
    elif len(argv) == 3 and argv[0] == "promconfig":
        promconfig(argv[1], argv[2])
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
