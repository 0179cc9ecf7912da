"""The one decision: what a container gets, and why.

Every door (precreate, createRuntime/prestart, the runtime shim, CDI, `plan`, the device
plugin) calls `decide` or `decide_cdi`; nothing else decides. The admin's configuration is
a ceiling that a container can only tighten:

- sources: which of the container's asks count. `env` and `annotations` switch a source
  off; `env_unprivileged` and `annotations_unprivileged` (default: as env_unprivileged)
  switch it off for containers without CAP_SYS_ADMIN; `mounts` switches on NVIDIA's
  volume-mount convention.
- profile: the admin's `default_profile` always applies. A container may select another
  (annotation nvbind.io/profile, env NVBIND_PROFILE) only from `allowed_profiles`, and
  the selected profile cannot loosen the default's isolation or limits.
- capabilities: the final set, after the profile, must lie within `capabilities`.
- isolation: shared may become exclusive or virtual; nothing becomes shared again, and
  exclusive and virtual do not turn into each other.
- memory_limit / mps_thread_percentage: the smallest of the profiles' and the
  container's; a container asking for more than the admin's limit is refused.
- env that carries policy (CUDA_MPS_*, NVBIND_*) replaces the container's own values.
- Kubernetes sandbox (pause) containers never get GPUs.

A refusal is a PolicyError naming the setting that refused it.
"""

from nvbind.core import request as rq
from nvbind.core.grant import Grant
from nvbind.errors import InputError
from nvbind.record import Record

ENV_PROFILE = "NVBIND_PROFILE"
# Written by apply.spec into every config nvbind edited, so a later door (createRuntime
# after precreate, a hook after the shim) leaves the container alone. An annotation, not
# env: env survives `podman commit` into images, annotations do not. A container that sets
# it itself only opts out of nvbind.
MARKER = "nvbind.io/injected"
# CRI's container-type annotations (containerd: cri/annotations; CRI-O: pkg/annotations)
SANDBOX_ANNOTATIONS = {"io.kubernetes.cri.container-type": "sandbox",
                       "io.kubernetes.cri-o.ContainerType": "sandbox"}
ENFORCED_ENV = ("CUDA_MPS_", "NVBIND_")


class PolicyError(InputError):
    """The container asked for more than the configuration allows."""


class Decision(Record):
    """inject: whether anything is given. grant: what (None when nothing); edits: the
    ContainerEdits (None until a host was looked at); reasons: why, item by item."""

    __slots__ = ("inject", "request", "grant", "edits", "reasons", "note", "host")
    DEFAULTS = {"request": rq.NO_REQUEST, "grant": None, "edits": None, "reasons": (),
                "note": None, "host": None}
    FROZEN = False


def env_map(cfg: dict) -> dict[str, str]:
    from nvbind import oci
    return oci.env_map(cfg)


def annotations(cfg: dict) -> dict:
    ann = cfg.get("annotations")
    return ann if isinstance(ann, dict) else {}


def gates(conf: dict, privileged: bool) -> tuple[dict, list[str]]:
    """Which of the container's sources count, and a reason for each one that does not."""
    src = conf["sources"]
    ann_unpriv = src.get("annotations_unprivileged")
    if ann_unpriv is None:
        ann_unpriv = src["env_unprivileged"]
    out = {"env": src["env"], "annotations": src["annotations"], "mounts": src["mounts"]}
    why = []
    if out["env"] and not privileged and not src["env_unprivileged"]:
        out["env"] = False
        why.append("env ignored: sources.env_unprivileged = false and the container has no "
                   "CAP_SYS_ADMIN")
    if out["annotations"] and not privileged and not ann_unpriv:
        out["annotations"] = False
        why.append("annotations ignored: sources.annotations_unprivileged = false and the "
                   "container has no CAP_SYS_ADMIN")
    if not src["env"]:
        why.append("env ignored: sources.env = false")
    if not src["annotations"]:
        why.append("annotations ignored: sources.annotations = false")
    return out, why


def decide(settings, cfg: dict, host=None, hook=None) -> Decision:
    """settings: nvbind.settings.Settings (its configuration is read only when the
    container asks for something); cfg: the container's OCI config; host: an Inventory, or
    a callable (profile devices) -> Inventory, or None to stop before the host is looked
    at; hook: nvbind's own command for the hooks the edits need, or a callable giving it
    (None: no hooks). Nothing of the configuration is read for a container that asks for
    nothing."""
    env, ann = env_map(cfg), annotations(cfg)
    if MARKER in ann:
        return Decision(False, note="already injected", reasons=(
            f"annotation {MARKER} is set: nvbind already edited this container's config at an "
            "earlier stage (or the container set it, and gets nothing more)",))
    for key, value in SANDBOX_ANNOTATIONS.items():
        if ann.get(key) == value:
            return Decision(False, note="sandbox", reasons=(
                f"annotation {key}={value}: a Kubernetes sandbox (pause) container never "
                "gets GPUs",))
    if not rq.mentions(env, ann, cfg):
        return Decision(False, reasons=("no GPU requested: the container is left unchanged",))
    conf = settings.config
    open_gates, ignored = gates(conf, rq.privileged(cfg))
    req = rq.from_config(env, ann, cfg, open_gates)
    if req.empty:
        why = list(req.reasons) or ["no GPU requested: the container is left unchanged"]
        return Decision(False, request=req, reasons=tuple(why + ignored))
    grant = _grant(conf, req, env, ann, open_gates, ignored)
    d = Decision(True, request=req, grant=grant, reasons=grant.reasons)
    if host is not None:
        from nvbind.core import edits
        d.host = host(grant.profile.devices) if callable(host) else host
        d.edits = edits.compute(d.host, grant, hook() if callable(hook) else hook)
    return d


def decide_cdi(settings, inv, capabilities: tuple[str, ...], hook=None):
    """The grants a CDI spec describes: the host's devices one by one, under the admin's
    default profile and capability ceiling. Returns a function (selector, devices_only=False) ->
    ContainerEdits. Leases cannot be taken through a CDI spec: an exclusive default
    profile is refused rather than silently not enforced."""
    from nvbind.core import edits, profiles
    conf = settings.config
    prof = profiles.resolve(None, conf)
    if prof.isolation == "exclusive":
        raise PolicyError(f"default_profile {prof.name!r} has isolation = \"exclusive\", which a "
                          "CDI spec cannot enforce (no lease is taken): use the hook or the shim")
    caps = tuple(sorted(prof.capabilities)) if prof.capabilities is not None else tuple(capabilities)
    _ceiling(conf, caps, f"--capabilities / default_profile {prof.name!r}")

    def grant(devices) -> Grant:
        return Grant(devices, "CDI", caps, prof, prof.isolation, prof.memory_limit,
                     prof.mps_thread_percentage,
                     reasons=(f"CDI device under default_profile {prof.name!r}",))

    hook = hook() if callable(hook) else hook
    return lambda devices, devices_only=False: edits.compute(inv, grant(devices), hook, devices_only)


def _ceiling(conf: dict, caps, where: str) -> None:
    offered = set(conf["capabilities"])
    refused = sorted(set(caps) - offered)
    if refused:
        raise PolicyError(f"capability {', '.join(refused)} (from {where}) is not offered: "
                          f"capabilities = [{', '.join(sorted(offered))}] in the configuration")


def _profile(conf: dict, env: dict, ann: dict, open_gates: dict):
    """(default profile, selected profile or None, where it was selected)."""
    from nvbind.core import profiles
    base = profiles.resolve(None, conf)
    name = where = None
    if open_gates["annotations"] and ann.get(rq.ANN_PROFILE):
        name, where = ann[rq.ANN_PROFILE], f"annotation {rq.ANN_PROFILE}"
    elif open_gates["env"] and env.get(ENV_PROFILE):
        name, where = env[ENV_PROFILE], f"env {ENV_PROFILE}"
    if name is None or name == base.name:
        return base, None, None
    if not isinstance(name, str) or len(name) > 64:
        raise InputError(f"{where}: not a profile name")
    if name not in conf["allowed_profiles"]:
        raise PolicyError(f"profile {name!r} ({where}) may not be selected by a container: "
                          f"allowed_profiles = [{', '.join(conf['allowed_profiles'])}] in the "
                          "configuration")
    return base, profiles.resolve(name, conf), where


def _isolation(base, chosen, req) -> tuple[str, list[str]]:
    iso, why = base.isolation, [f"isolation {base.isolation}: default_profile {base.name!r}"]
    asks = []
    if chosen is not None:
        asks.append((chosen.isolation, f"profile {chosen.name!r}", False))
    if req.isolation:
        asks.append((req.isolation, f"annotation {rq.ANN_ISOLATION}", True))
    for want, where, explicit in asks:
        if want == iso:
            continue
        if iso == "shared":
            iso = want
            why.append(f"isolation {want}: {where} (stricter than shared)")
        elif want == "shared" and not explicit:
            why.append(f"isolation {iso} kept: {where} says shared, which would loosen "
                       f"default_profile {base.name!r}")
        else:
            raise PolicyError(f"isolation {want!r} ({where}) would loosen isolation {iso!r} of "
                              f"default_profile {base.name!r}: a container may only make it "
                              "stricter (shared -> exclusive or virtual)")
    return iso, why


def _limits(base, chosen, req) -> tuple[int | None, int | None, list[str]]:
    why = []
    admin = [(p.memory_limit, f"profile {p.name!r}") for p in (base, chosen)
             if p is not None and p.memory_limit]
    limit = min(admin)[0] if admin else None
    if admin:
        why.append(f"memory limit {limit >> 20} MiB: {min(admin)[1]}")
    if req.memory_limit:
        if limit is not None and req.memory_limit > limit:
            raise PolicyError(f"annotation {rq.ANN_MEMORY} ({req.memory_limit >> 20} MiB) is above "
                              f"the limit of {min(admin)[1]} ({limit >> 20} MiB): a container may "
                              "only lower it (memory_limit in the configuration)")
        limit = req.memory_limit
        why.append(f"memory limit {limit >> 20} MiB: annotation {rq.ANN_MEMORY}")
    pcts = [p.mps_thread_percentage for p in (base, chosen)
            if p is not None and p.mps_thread_percentage]
    return limit, (min(pcts) if pcts else None), why


def _grant(conf: dict, req, env: dict, ann: dict, open_gates: dict, ignored=()) -> Grant:
    base, chosen, where = _profile(conf, env, ann, open_gates)
    prof = chosen or base
    why = list(ignored) + list(req.reasons)
    why.append(f"profile {prof.name!r}: " + (f"selected by {where} (in allowed_profiles)"
                                              if chosen else "default_profile"))
    if prof.capabilities is not None:
        caps, cwhere = tuple(prof.capabilities), f"profile {prof.name!r}"
    else:
        caps, cwhere = tuple(req.capabilities), req.caps_source
    _ceiling(conf, caps, cwhere)
    why.append(f"capabilities {','.join(caps)}: {cwhere}, within the configuration's "
               "capabilities")
    iso, iwhy = _isolation(base, chosen, req)
    limit, pct, lwhy = _limits(base, chosen, req)
    return Grant(req.devices, req.source, tuple(sorted(caps)), prof, iso, limit, pct,
                 req.requires, req.mig_config, req.mig_monitor, tuple(why + iwhy + lwhy))


def enforced(name: str) -> bool:
    """Env that carries the admin's policy: the container's own value never wins."""
    return name.startswith(ENFORCED_ENV)
