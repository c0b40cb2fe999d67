# Find-PathReferences: which of some files and folders the VMs of this host use. Read-only.
# Each host only sees its own VMs (Get-VM), so before deleting on a volume other hosts can see (an
# SMB share, a cluster shared volume) hvmove asks every such host with this script.
# It collects what Remove-StorageFiles collects (attached disks and checkpoint disks with their
# whole parent chains, ISO files, VM locations, the host's default folders) and reports:
# - a File that is referenced, that is a configuration or state file of a VM in its location, or
#   that is a virtual disk while some VM's chain could not be read (it might be a parent);
# - a Folder that is a VM location or holds one, holds a referenced file, or holds a default
#   folder of the host.
# Prints one PathReferences document.
param([string[]]$Path = @(), [string[]]$Folder = @())
$ErrorActionPreference = 'Stop'

function Get-HvmPathKey([string]$path) {
    if ([string]::IsNullOrWhiteSpace($path)) { return '' }
    $p = $path.Trim()
    try { $p = [System.IO.Path]::GetFullPath($p) } catch { $p = $path.Trim() }
    return $p.TrimEnd('\').ToLowerInvariant()
}

# The key under which references are compared. On a share the server name is left out: hosts
# may name one file server differently (fs01, fs01.corp.example, an address), and a false match
# only keeps a file.
function Get-HvmRefKey([string]$path) {
    $key = Get-HvmPathKey $path
    if ($key.StartsWith('\\')) {
        $cut = $key.IndexOf('\', 2)
        if ($cut -gt 2) { return '\\*' + $key.Substring($cut) }
    }
    return $key
}

function Test-HvmAbsolutePath([string]$path) {
    return ($path -match '^[A-Za-z]:\\' -or $path -match '^\\\\[^\\]+\\[^\\]+')
}

# Whether the path key $child is $parent itself or lies below it.
function Test-HvmInside([string]$child, [string]$parent) {
    if (-not $child -or -not $parent) { return $false }
    return ($child -eq $parent -or $child.StartsWith($parent + '\'))
}

$referenced = @{}
$walked = @{}
$unreadChains = [System.Collections.Generic.List[string]]::new()
$locations = [System.Collections.Generic.List[object]]::new()

# Marks $path and every parent in its chain as referenced by $owner. A chain that cannot be
# followed to its end (a parent missing, or a share this session cannot see: Test-Path says
# False on "access denied") is recorded as unread, so that no virtual disk passes for unused.
function Add-HvmChain([string]$path, [string]$owner) {
    $current = $path
    for ($depth = 0; $current -and $depth -lt 64; $depth++) {
        $key = Get-HvmRefKey $current
        if (-not $referenced.ContainsKey($key)) { $referenced[$key] = "a disk of VM '$owner'" }
        if ($walked.ContainsKey($key)) { return }
        $walked[$key] = $true
        if (-not (Test-Path -LiteralPath $current)) {
            if ($depth -gt 0 -or $key.StartsWith('\\')) {
                $unreadChains.Add("'$current' of VM '$owner' (not found, or not reachable from this session)")
            }
            return
        }
        try {
            $vhd = Get-VHD -Path $current -ErrorAction Stop
        } catch {
            $unreadChains.Add("'$current' of VM '$owner' ($($_.Exception.Message))")
            return
        }
        $current = [string]$vhd.ParentPath
    }
}

# 1. What the VMs of this host reference.
$vmHost = Get-VMHost
$hostDefaults = @((Get-HvmRefKey ([string]$vmHost.VirtualHardDiskPath)), (Get-HvmRefKey ([string]$vmHost.VirtualMachinePath)))
# Records what every VM of this host references: drives and checkpoint drives with their
# chains, ISO files, and its locations (with the VM and checkpoint ids found in file names).
# A function, so that the copy in each script that needs it stays identical (a test checks).
function Add-HvmVmReferences {
    foreach ($vm in @(Get-VM)) {
        $owner = [string]$vm.Name
        $ids = [System.Collections.Generic.List[string]]::new()
        $ids.Add($vm.Id.ToString().ToLowerInvariant())
        $drives = [System.Collections.Generic.List[object]]::new()
        $dvds = [System.Collections.Generic.List[object]]::new()
        foreach ($d in @(Get-VMHardDiskDrive -VM $vm)) { $drives.Add($d) }
        foreach ($d in @(Get-VMDvdDrive -VM $vm)) { $dvds.Add($d) }
        foreach ($s in @(Get-VMSnapshot -VM $vm)) {
            $ids.Add(([string]$s.Id).ToLowerInvariant())
            foreach ($d in @(Get-VMHardDiskDrive -VMSnapshot $s)) { $drives.Add($d) }
            foreach ($d in @(Get-VMDvdDrive -VMSnapshot $s)) { $dvds.Add($d) }
        }
        foreach ($d in $drives) {
            if ($d.Path -and $null -eq $d.DiskNumber) { Add-HvmChain ([string]$d.Path) $owner }
        }
        foreach ($d in $dvds) {
            if ($d.Path) { $referenced[(Get-HvmRefKey ([string]$d.Path))] = "an ISO file of VM '$owner'" }
        }
        foreach ($location in @($vm.Path, $vm.ConfigurationLocation, $vm.SnapshotFileLocation, $vm.SmartPagingFilePath)) {
            if (-not $location) { continue }
            $entry = @{
                key   = (Get-HvmRefKey ([string]$location))
                path  = [string]$location
                owner = $owner
                ids   = $ids.ToArray()
            }
            $locations.Add($entry)
        }
    }
}

Add-HvmVmReferences

# Why $p must not be deleted, or $null.
function Get-HvmFileRefusal([string]$p) {
    if (-not (Test-HvmAbsolutePath $p)) { return 'not an absolute path' }
    $key = Get-HvmRefKey $p
    if ($referenced.ContainsKey($key)) { return "referenced: $($referenced[$key])" }
    foreach ($location in $locations) {
        if ($key -eq $location.key) { return "the location '$($location.path)' of VM '$($location.owner)'" }
        if (-not (Test-HvmInside $key $location.key)) { continue }
        foreach ($id in $location.ids) {
            if ($key.Contains($id)) {
                return "a configuration or state file of VM '$($location.owner)' in its location '$($location.path)'"
            }
        }
    }
    foreach ($default in $hostDefaults) {
        if ($default -and $key -eq $default) { return 'a default folder of this host' }
    }
    return $null
}

$files = [System.Collections.Generic.List[object]]::new()
$usedFolders = [System.Collections.Generic.List[object]]::new()

# 2. Files.
foreach ($item in @($Path)) {
    if ($null -eq $item) { continue }
    $p = [string]$item
    $reason = Get-HvmFileRefusal $p
    if (-not $reason -and $unreadChains.Count -gt 0 -and $p -match '\.(a?vhdx?|vhds)$') {
        $reason = "a virtual disk, and the chain of $($unreadChains[0]) could not be read, so it might be a parent"
    }
    if ($reason) {
        $entry = [pscustomobject]@{ path = $p; reason = $reason }
        $files.Add($entry)
    }
}

# 3. Folders.
foreach ($item in @($Folder)) {
    if ($null -eq $item) { continue }
    $f = [string]$item
    $key = Get-HvmRefKey $f
    $reason = $null
    foreach ($location in $locations) {
        if (Test-HvmInside $location.key $key) {
            $reason = "the location '$($location.path)' of VM '$($location.owner)' lies inside"
            break
        }
    }
    if (-not $reason) {
        foreach ($fileKey in @($referenced.Keys)) {
            if (Test-HvmInside $fileKey $key) {
                $reason = "'$fileKey' lies inside: $($referenced[$fileKey])"
                break
            }
        }
    }
    if (-not $reason) {
        foreach ($default in $hostDefaults) {
            if (Test-HvmInside $default $key) { $reason = 'a default folder of this host lies inside' }
        }
    }
    if ($reason) {
        $entry = [pscustomobject]@{ path = $f; reason = $reason }
        $usedFolders.Add($entry)
    }
}

$out = [pscustomobject]@{
    host    = [string]$env:COMPUTERNAME
    files   = @($files.ToArray())
    folders = @($usedFolders.ToArray())
}
ConvertTo-Json -InputObject $out -Depth 8 -Compress
