"""Hardware profiles: YAML data validated into frozen `Profile`s, and detection of this machine's one."""
from harness.profiles.detection import Detection, GpuInfo, detect
from harness.profiles.loader import default_profiles_dir, load_profile, load_profiles
from harness.profiles.schema import CLASSES, FEATURES, FORMATS, Npu, Profile, ProfileError

__all__ = [
    "CLASSES", "FEATURES", "FORMATS", "Detection", "GpuInfo", "Npu", "Profile", "ProfileError",
    "default_profiles_dir", "detect", "load_profile", "load_profiles",
]
