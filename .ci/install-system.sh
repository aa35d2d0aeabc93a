#!/usr/bin/env bash
# Install the system packages the integration tests need (Debian/Ubuntu):
#   orthanc            DICOM server the tests start privately (tests/support/orthanc.py)
#   orthanc-dicomweb   its DICOMweb plugin (QIDO-RS / WADO-RS)
#   orthanc-wsi        OrthancWSIDicomizer, third-party WSI DICOM writer (tests/support/thirdparty.py)
#   pixelmed-apps      PixelMed TIFFToDicom, WSI converter of the fidelity corpus (tests/support/corpus.py);
#                      pulls in a headless Java runtime
#   dcmtk              DCMTK dcmcjpls/dcmcrle/dcmcjpeg, re-encoders of the fidelity corpus
#   chromium           headless browser of the `dicomslide serve` viewer test (tests/serve)
#
# Idempotent: does nothing but check when everything is installed.  The tests start their own
# Orthanc on a free loopback port, so the Debian "orthanc" service must not run: its default
# config listens on 8042/4242 and would only waste memory (or collide with a manual run of
# `python -m tests.support.orthanc --port 8042`).
set -euo pipefail

PACKAGES=(orthanc orthanc-dicomweb orthanc-wsi pixelmed-apps dcmtk chromium)

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install-system.sh: need root (or sudo) to install ${PACKAGES[*]}" >&2
        exit 1
    fi
fi

is_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done

if ((${#missing[@]})); then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-system.sh: apt-get not found; install ${missing[*]} by hand" >&2
        exit 1
    fi
    echo "install-system.sh: installing ${missing[*]}"
    # Keep the maintainer scripts from starting the service during installation: a
    # policy-rc.d that answers 101 ("action forbidden") is honoured by invoke-rc.d.  Only
    # install our own if there is none (Docker images often ship one already).
    policy=/usr/sbin/policy-rc.d
    own_policy=false
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod 755 "$policy"
        own_policy=true
    fi
    cleanup_policy() {
        if [[ $own_policy == true ]]; then
            "${SUDO[@]}" rm -f "$policy"
        fi
    }
    trap cleanup_policy EXIT
    "${SUDO[@]}" apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    cleanup_policy
    trap - EXIT
else
    echo "install-system.sh: ${PACKAGES[*]} already installed"
fi

# Belt and braces: should a service manager have started it anyway, stop it and keep it
# from starting at boot.  Failures are fine (no init system in containers).
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    "${SUDO[@]}" systemctl disable --now orthanc >/dev/null 2>&1 || true
fi
if command -v service >/dev/null 2>&1; then
    "${SUDO[@]}" service orthanc stop >/dev/null 2>&1 || true
fi

# Report what the tests will find.
command -v OrthancWSIDicomizer >/dev/null
for binary in /usr/sbin/Orthanc /usr/share/orthanc/plugins/libOrthancDicomWeb.so; do
    if [[ ! -e $binary ]]; then
        echo "install-system.sh: expected $binary after installation" >&2
        exit 1
    fi
done
echo "install-system.sh: $(/usr/sbin/Orthanc --version 2>/dev/null | head -n 1)," \
    "$(OrthancWSIDicomizer --version 2>/dev/null | head -n 1)"
