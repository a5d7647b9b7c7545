"""A client of a Xenos host's XML-RPC interface, with nothing but Python's standard library.

It searches for a template, deploys it (the owner's deploy parts from `xenos deploy-parts`),
pauses and resumes the instance (each signed with `xenos sign`), checks that an unsigned pause
is refused, and prints what it saw as one JSON line. Arguments: the host's API URL, the template's
name, then the command that runs the xenos CLI with the owner's key.
"""
import json
import subprocess
import sys
import xmlrpc.client

api, template_name, xenos = sys.argv[1], sys.argv[2], sys.argv[3:]


def run(*args):
    return subprocess.run([*xenos, *args], check=True, capture_output=True, text=True).stdout.strip()


rpc = xmlrpc.client.ServerProxy(api + "/RPC2")
seen = {"methods": rpc.system.listMethods()}
found = rpc.templates.search(template_name)["results"]
template = found[0]["id"]
spec = {"name": "from-python"}
parts = run("deploy-parts", template, "--spec", json.dumps(spec))
deployed = rpc.instances.deploy(template, spec, parts, True)
instance = deployed["instances"][0]["id"]
seen["deployed"] = deployed["instances"][0]["name"]

try:
    rpc.instance.pause(instance, "")
except xmlrpc.client.Fault as fault:
    seen["unsigned"] = fault.faultString.split(":")[0]

rpc.instance.pause(instance, run("sign", "pause", instance))
seen["paused"] = rpc.instance.get(instance, run("sign", "get", instance))["state"]
rpc.instance.resume(instance, run("sign", "resume", instance))
seen["resumed"] = rpc.instance.get(instance, run("sign", "get", instance))["state"]
seen["cpu"] = rpc.instance.metrics(instance, run("sign", "metrics", instance))["cpuSeconds"] >= 0
seen["searched"] = [r["id"] for r in rpc.instances.search("from-python")["results"]]
seen["instance"] = instance
print(json.dumps(seen))
