# Sourced by the install-*.sh scripts: `apt_install WHAT PACKAGE...` installs Debian packages
# (apt-get, through sudo unless root, no recommends) without starting any service they ship
# (a policy-rc.d refuses for the time of the install): the tests start their own servers on
# free loopback ports. Without apt-get it fails, saying to install WHAT by hand.

apt_install() {
  local what="$1" sudo="" policy="" rc=0
  shift
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: no apt-get; install $what yourself" >&2
    return 1
  fi
  if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    policy=/usr/sbin/policy-rc.d
  fi
  {
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  } || rc=$?
  if [[ -n "$policy" ]]; then $sudo rm -f "$policy"; fi
  return "$rc"
}
