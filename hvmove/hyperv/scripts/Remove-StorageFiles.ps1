# Remove-StorageFiles: deletes leftover files of a storage move, then the folders that are empty.
# First it collects what every VM on this host references: the files attached to its drives and
# its checkpoints' drives with their whole parent chains (Get-VHD ParentPath), its ISO files, its
# configuration, checkpoint and smart paging locations, and the host's default folders.
# A Path is refused when it is referenced, when it is a configuration or state file of a VM inside
# that VM's current location (its name or folder carries the VM or checkpoint id), when it is a
# folder, when it is a virtual disk that is attached, or when some VM's chain could not be read
# and it is a virtual disk; a missing Path is reported absent; any other is deleted.
# Each Folder, deepest first, is removed only when it exists, is empty after that, and no VM
# location, host default folder or referenced file lies inside it; otherwise it is kept with a
# reason (a missing folder is reported absent). Only this host's VMs are seen: on shared storage
# hvmove first asks every other host that sees it (Find-PathReferences) and sends only what no VM
# uses.
# Prints one RemoveReport document.
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

$paths = @()
if ($null -ne $Path) { $paths = @($Path) }
$folders = @()
if ($null -ne $Folder) { $folders = @($Folder) }

$removed = [System.Collections.Generic.List[string]]::new()
$absent = [System.Collections.Generic.List[string]]::new()
$refused = [System.Collections.Generic.List[object]]::new()
$foldersRemoved = [System.Collections.Generic.List[string]]::new()
$foldersKept = [System.Collections.Generic.List[object]]::new()

# 2. Files.
foreach ($item in $paths) {
    $p = [string]$item
    $reason = Get-HvmFileRefusal $p
    if (-not $reason) {
        if (Test-Path -LiteralPath $p -PathType Container) {
            $reason = 'is a folder; pass it in Folder'
        } elseif (-not (Test-Path -LiteralPath $p)) {
            $absent.Add($p)
            continue
        } elseif ($p -match '\.(a?vhdx?|vhds)$') {
            if ($unreadChains.Count -gt 0) {
                $reason = "a virtual disk, and the chain of $($unreadChains[0]) could not be read, so it might be a parent"
            } else {
                try {
                    $vhd = Get-VHD -Path $p -ErrorAction Stop
                    if ($vhd.Attached) { $reason = 'a virtual disk that is attached (in use)' }
                } catch {
                    Write-Warning -Message "Get-VHD '$p' failed: $($_.Exception.Message)"
                }
            }
        }
    }
    if (-not $reason) {
        try {
            Remove-Item -LiteralPath $p -Force -Confirm:$false
            $removed.Add($p)
            continue
        } catch {
            $reason = "delete failed: $($_.Exception.Message)"
        }
    }
    $refusal = [pscustomobject]@{ path = $p; reason = $reason }
    $refused.Add($refusal)
}

# 3. Folders, deepest first.
$folderItems = [System.Collections.Generic.List[object]]::new()
foreach ($item in $folders) {
    $f = [string]$item
    $entry = @{ path = $f; depth = (Get-HvmPathKey $f).Split('\').Count }
    $folderItems.Add($entry)
}
$deepestFirst = @($folderItems | Sort-Object -Property @{ Expression = { $_.depth }; Descending = $true })
foreach ($item in $deepestFirst) {
    $f = $item.path
    $key = Get-HvmRefKey $f
    $reason = $null
    if (-not (Test-HvmAbsolutePath $f)) {
        $reason = 'not an absolute path'
    } elseif ($key -eq (Get-HvmRefKey ([System.IO.Path]::GetPathRoot($f)))) {
        $reason = 'the root of a volume or share'
    } elseif (-not (Test-Path -LiteralPath $f -PathType Container)) {
        if (Test-Path -LiteralPath $f) {
            $reason = 'is a file; pass it in Path'
        } else {
            $absent.Add($f)
            continue
        }
    }
    if (-not $reason) {
        foreach ($location in $locations) {
            if (Test-HvmInside $location.key $key) {
                $reason = "the location '$($location.path)' of VM '$($location.owner)' lies inside"
                break
            }
            if (Test-HvmInside $key $location.key) {
                foreach ($id in $location.ids) {
                    if ($key.Contains($id)) { $reason = "a folder of VM '$($location.owner)' in its location '$($location.path)'" }
                }
                if ($reason) { break }
            }
        }
    }
    if (-not $reason) {
        foreach ($default in $hostDefaults) {
            if (Test-HvmInside $default $key) {
                $reason = 'a default folder of this host lies inside'
                break
            }
        }
    }
    if (-not $reason) {
        foreach ($fileKey in @($referenced.Keys)) {
            if ($fileKey.StartsWith($key + '\')) {
                $reason = "holds a referenced file ($($referenced[$fileKey]))"
                break
            }
        }
    }
    if (-not $reason) {
        $entries = @([System.IO.Directory]::GetFileSystemEntries($f))
        if ($entries.Count -gt 0) { $reason = "not empty ($($entries.Count) entries)" }
    }
    if (-not $reason) {
        try {
            [System.IO.Directory]::Delete($f)
            $foldersRemoved.Add($f)
            continue
        } catch {
            $reason = "delete failed: $($_.Exception.Message)"
        }
    }
    $kept = [pscustomobject]@{ path = $f; reason = $reason }
    $foldersKept.Add($kept)
}

$out = [pscustomobject]@{
    removed         = $removed.ToArray()
    absent          = $absent.ToArray()
    refused         = $refused.ToArray()
    folders_removed = $foldersRemoved.ToArray()
    folders_kept    = $foldersKept.ToArray()
}
ConvertTo-Json -InputObject $out -Depth 8 -Compress
