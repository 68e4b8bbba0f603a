# spec/integration/configmap_volume.sh: cm_write, a ConfigMap volume updated
# as the kubelet does it (sourced by the reload tests, not a test).

# cm_write DIR [SRC]: makes the ConfigMap volume DIR hold the files of SRC
# (none without SRC) in the order of the kubelet's AtomicWriter.Write
# (pkg/volume/util/atomic_writer.go): read the current ..data link, write
# the payload into a new "..<UTC timestamp>.<random>" directory, link
# ..data_tmp to it and rename that over ..data (rename(2), the atomic step;
# $swapped_ms is its time), create the missing visible links
# "name -> ..data/name", remove the visible links of files no longer in
# the payload, remove the old timestamped directory.
cm_write() {
  local dir=$1 src=${2:-} old ts f name
  old=$(readlink "$dir/..data" 2>/dev/null || true)
  ts=$(mktemp -d "$dir/..$(date -u +%Y_%m_%d_%H_%M_%S).XXXXXXXXX")
  chmod 755 "$ts"
  if [ -n "$src" ]; then
    cp "$src"/* "$ts"/
  fi
  ln -s "$(basename "$ts")" "$dir/..data_tmp"
  mv -T "$dir/..data_tmp" "$dir/..data"
  swapped_ms=$(($(date +%s%N) / 1000000))
  for f in "$ts"/*; do
    [ -e "$f" ] || continue
    name=$(basename "$f")
    [ -L "$dir/$name" ] || ln -s "..data/$name" "$dir/$name"
  done
  if [ -n "$old" ]; then
    for f in "$dir/$old"/*; do
      [ -e "$f" ] || continue
      name=$(basename "$f")
      [ -e "$ts/$name" ] || rm -f "${dir:?}/$name"
    done
    rm -rf "${dir:?}/$old"
  fi
}
