# New-CanaryVM: creates the scratch VM of `hvmove canary` and nothing else. First a marker file
# (hvmove-canary.marker, holding the Marker text) in each MarkerFolder, so that whatever this run
# leaves behind can be found and removed by the next one; then, in Path, a 1 GiB dynamic disk
# '<Name>.vhdx' with a known pattern written through the host (mounted, one NTFS partition, a
# 1 MiB pattern file, dismounted), its differencing child '<Name> [child].vhdx' (brackets on
# purpose), and an Off generation 2 VM '<Name>' with its configuration in Path and the child
# attached. Every folder must be named <Name>, inside a folder that exists, and the name must
# start with 'hvmove-canary-'.
# Prints one CanaryCreated document with the SHA-256 of the pattern file.
param([string]$Name, [string]$Path, [string[]]$MarkerFolder = @(), [string]$Marker)
$ErrorActionPreference = 'Stop'

$prefix = 'hvmove-canary-'
if ($Name -notmatch '^hvmove-canary-[a-z0-9]+$') {
    throw "Name '$Name' must be '$prefix' followed by lower-case letters and digits"
}
$folders = @($Path) + @($MarkerFolder)
# Only folders named after the canary are created: their parents must exist already, so that
# removing the canary's folders removes everything it made.
foreach ($f in $folders) {
    $text = ([string]$f).TrimEnd('\')
    if ([System.IO.Path]::GetFileName($text) -ne $Name) { throw "Folder '$f' must be named '$Name'" }
    $parent = [System.IO.Path]::GetDirectoryName($text)
    if (-not $parent -or -not [System.IO.Directory]::Exists($parent)) {
        throw "Folder '$parent' does not exist; give a folder that exists"
    }
}
$existing = @(Get-VM -ErrorAction SilentlyContinue | Where-Object { $_.Name -eq $Name })
if ($existing.Count -gt 0) { throw "A VM named '$Name' already exists" }

$markers = [System.Collections.Generic.List[string]]::new()
foreach ($f in $folders | Select-Object -Unique) {
    $null = New-Item -ItemType Directory -Path $f -Force
    $file = [System.IO.Path]::Combine($f, 'hvmove-canary.marker')
    Set-Content -LiteralPath $file -Value $Marker -Encoding UTF8
    $markers.Add($file)
}

$base = [System.IO.Path]::Combine($Path, "$Name.vhdx")
$child = [System.IO.Path]::Combine($Path, "$Name [child].vhdx")
$null = New-VHD -Path $base -SizeBytes 1GB -Dynamic

# The pattern goes in through the host: mount, partition, format, write, dismount.
$hash = ''
$mounted = $false
try {
    $vhd = Mount-VHD -Path $base -Passthru
    $mounted = $true
    $disk = Get-Disk -Number $vhd.DiskNumber
    $null = Initialize-Disk -Number $disk.Number -PartitionStyle GPT
    $partition = New-Partition -DiskNumber $disk.Number -UseMaximumSize -AssignDriveLetter
    $null = Format-Volume -Partition $partition -FileSystem NTFS -NewFileSystemLabel 'hvmove-canary' -Confirm:$false
    $letter = [string](Get-Partition -DiskNumber $disk.Number -PartitionNumber $partition.PartitionNumber).DriveLetter
    $pattern = [System.Text.StringBuilder]::new()
    for ($i = 0; $pattern.Length -lt 1048576; $i++) {
        $null = $pattern.Append("hvmove canary $Name block $i`n")
    }
    $patternFile = "$($letter):\hvmove-canary.bin"
    [System.IO.File]::WriteAllText($patternFile, $pattern.ToString(0, 1048576))
    $hash = [string](Get-FileHash -LiteralPath $patternFile -Algorithm SHA256).Hash
} finally {
    if ($mounted) { Dismount-VHD -Path $base }
}

$null = New-VHD -Path $child -ParentPath $base -Differencing
$vm = New-VM -Name $Name -Path ([System.IO.Path]::GetDirectoryName($Path.TrimEnd('\'))) -NoVHD -Generation 2 -MemoryStartupBytes 512MB
Add-VMHardDiskDrive -VM $vm -Path $child

$out = [pscustomobject]@{
    vm_id                  = [string]$vm.Id
    name                   = [string]$vm.Name
    configuration_location = [string]$vm.ConfigurationLocation
    base_path              = $base
    child_path             = $child
    pattern_sha256         = $hash.ToLowerInvariant()
    markers                = $markers.ToArray()
}
ConvertTo-Json -InputObject $out -Depth 8 -Compress
