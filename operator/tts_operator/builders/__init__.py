"""Pure builders: a TTSService spec -> the manifests of its children (plain dicts)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tts_operator.builders.common import content_hash
from tts_operator.builders.configmap import build_configmap
from tts_operator.builders.deployment import build_deployment
from tts_operator.builders.hpa import build_hpa
from tts_operator.builders.model import DownloadRules, model_delivery
from tts_operator.builders.pdb import build_pdb
from tts_operator.builders.scaledobject import PrometheusSource, build_scaledobject
from tts_operator.builders.service import build_service
from tts_operator.kinds import HPA, PDB, SCALEDOBJECT, Kind, Manifest
from tts_operator.models import TTSServiceSpec


@dataclass(frozen=True)
class ChildRef:
    """A child kind and name, for children the spec no longer wants."""

    type: Kind
    name: str

    @property
    def api_version(self) -> str:
        return self.type.api_version

    @property
    def kind(self) -> str:
        return self.type.kind


@dataclass(frozen=True)
class Children:
    """What one TTSService should own right now."""

    desired: list[Manifest]
    unwanted: list[ChildRef] = field(default_factory=list)


def build_children(
    name: str,
    namespace: str,
    spec: TTSServiceSpec,
    default_image: str,
    download: DownloadRules | None = None,
    prometheus: PrometheusSource | None = None,
) -> Children:
    """`download`: what the policy lets an http(s) model download do (policy.download_rules;
    None: the policy's defaults). `prometheus`: where a KEDA ScaledObject reads queue latency
    (operator settings; None: the defaults)."""
    image = spec.runtime.image or default_image
    model = spec.model
    delivery = model_delivery(
        model.uri, image, download, model.sha256, model.config_sha256, model.token_secret_ref
    )
    configmap = build_configmap(name, namespace, spec, delivery)
    desired = [
        configmap,
        build_deployment(name, namespace, spec, image, delivery, content_hash(configmap["data"])),
        build_service(name, namespace, spec),
    ]
    unwanted = []
    # At most one autoscaler: the provider's; the other (left from a provider switch) goes.
    auto = spec.autoscaling
    if auto.enabled and auto.provider == "hpa":
        desired.append(build_hpa(name, namespace, spec))
    else:
        unwanted.append(ChildRef(HPA, name))
    if auto.enabled and auto.provider == "keda":
        desired.append(build_scaledobject(name, namespace, spec, prometheus or PrometheusSource()))
    else:
        unwanted.append(ChildRef(SCALEDOBJECT, name))
    if spec.disruption.enabled:
        desired.append(build_pdb(name, namespace, spec))
    else:
        unwanted.append(ChildRef(PDB, name))
    return Children(desired=desired, unwanted=unwanted)
