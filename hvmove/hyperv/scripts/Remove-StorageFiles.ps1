# Remove-StorageFiles: deletes leftover files of a storage move, then the folders that are empty.
# First it collects what every VM on this host references: the files attached to its drives and
# its checkpoints' drives with their whole parent chains (Get-VHD ParentPath), its ISO files, its
# configuration, checkpoint and smart paging locations, and the host's default folders.
# A Path is refused when it is referenced (by its text, or by its file identity: volume serial and
# file id, so that an 8.3 name, a mount point, a \\?\ prefix or an admin share cannot pass for
# another file), when it is a configuration or state file of a VM inside that VM's current location
# (its name or folder carries the VM or checkpoint id), when it is a folder, when it is a virtual
# disk that is attached, or when some VM's chain could not be read and it is a virtual disk; when
# its existence, its identity or (for a virtual disk) Get-VHD cannot be read, it is refused too.
# A missing Path is reported absent; any other is deleted.
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
$referencedIds = @{}
$walked = @{}
$unreadChains = [System.Collections.Generic.List[string]]::new()
$locations = [System.Collections.Generic.List[object]]::new()

# Test-Path writes an error when access is denied or the path is too long (PowerShell's
# FileSystemProvider.ItemExists: ItemExistsUnauthorizedAccessError, ItemExistsPathTooLongError)
# and then says False; with $ErrorActionPreference = 'Stop' that error ends the script. So every
# existence test has three answers: 'exists', 'absent', or 'unreachable: <why>'.
function Get-HvmPathState([string]$path) {
    $problems = $null
    $found = Test-Path -LiteralPath $path -ErrorAction SilentlyContinue -ErrorVariable problems
    if ($problems -and @($problems).Count -gt 0) { return 'unreachable: ' + [string]@($problems)[0].Exception.Message }
    if ($found) { return 'exists' }
    return 'absent'
}

# A file's identity: its volume's serial number and its 128-bit file id (FILE_ID_INFO from
# GetFileInformationByHandleEx, learn.microsoft.com/windows/win32/api/winbase/ns-winbase-file_id_info).
# Two spellings of one file (an 8.3 name, a mount point, a \\?\ prefix, an admin share) have one
# identity; their texts differ. Throws when it cannot be read.
function Get-HvmFileId([string]$path) {
    if (-not ('HvMove.FileIdentity' -as [type])) {
        Add-Type -Namespace HvMove -Name FileIdentity -MemberDefinition @'
[DllImport("kernel32.dll", CharSet = CharSet.Unicode, SetLastError = true)]
private static extern Microsoft.Win32.SafeHandles.SafeFileHandle CreateFileW(string name, uint access, uint share, IntPtr security, uint disposition, uint flags, IntPtr template);
[DllImport("kernel32.dll", SetLastError = true)]
private static extern bool GetFileInformationByHandleEx(Microsoft.Win32.SafeHandles.SafeFileHandle handle, int infoClass, byte[] info, uint size);
public static string Read(string path) {
    // no access right is needed to read the id; any sharing; FILE_FLAG_BACKUP_SEMANTICS
    using (var handle = CreateFileW(path, 0, 7, IntPtr.Zero, 3, 0x02000000, IntPtr.Zero)) {
        if (handle.IsInvalid) { throw new System.ComponentModel.Win32Exception(Marshal.GetLastWin32Error()); }
        var info = new byte[24];
        if (!GetFileInformationByHandleEx(handle, 18, info, 24)) { throw new System.ComponentModel.Win32Exception(Marshal.GetLastWin32Error()); }
        return BitConverter.ToString(info).Replace("-", "");
    }
}
'@
    }
    return [HvMove.FileIdentity]::Read($path)
}

# The values of an embedded instance (WMI DTD 2.0 XML) by property name.
function ConvertFrom-HvmEmbedded([string]$text) {
    $values = @{}
    if (-not $text) { return $values }
    $doc = [xml]$text
    foreach ($property in @($doc.INSTANCE.PROPERTY)) { $values[[string]$property.NAME] = [string]$property.VALUE }
    return $values
}

# Get-VHD resolves -Path as a wildcard pattern before its literal WMI call (UNC paths through the
# provider, local ones through a WQL LIKE query on CIM_DataFile that does not escape quotes: review
# windows-scripts.md finding 5, from the decompiled cmdlet), so a disk named 'web [prod].vhdx' is
# read on its literal path through Msvm_ImageManagementService.GetVirtualHardDiskSettingData and
# GetVirtualHardDiskState (learn.microsoft.com/windows/win32/hyperv_v2/msvm-imagemanagementservice)
# whenever the name holds [ ] * ? or '. Returns a hashtable with Get-VHD's property names.
function Get-HvmVhd([string]$path) {
    if ($path -notmatch "[\[\]\*\?']") {
        $vhd = Get-VHD -Path $path -ErrorAction Stop
        return @{
            Path = [string]$vhd.Path; ParentPath = [string]$vhd.ParentPath; VhdFormat = [string]$vhd.VhdFormat
            VhdType = [string]$vhd.VhdType; FileSize = [int64]$vhd.FileSize; Size = [int64]$vhd.Size
            DiskIdentifier = [string]$vhd.DiskIdentifier; Attached = [bool]$vhd.Attached
        }
    }
    $service = Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName Msvm_ImageManagementService | Select-Object -First 1
    $read = Invoke-CimMethod -InputObject $service -MethodName GetVirtualHardDiskSettingData -Arguments @{ Path = $path }
    if ([int]$read.ReturnValue -ne 0) { throw "GetVirtualHardDiskSettingData returned $($read.ReturnValue) for '$path'" }
    $state = Invoke-CimMethod -InputObject $service -MethodName GetVirtualHardDiskState -Arguments @{ Path = $path }
    if ([int]$state.ReturnValue -ne 0) { throw "GetVirtualHardDiskState returned $($state.ReturnValue) for '$path'" }
    $settings = ConvertFrom-HvmEmbedded ([string]$read.SettingData)
    $facts = ConvertFrom-HvmEmbedded ([string]$state.State)
    $formats = @{ '2' = 'VHD'; '3' = 'VHDX'; '4' = 'VHDSet' }
    $types = @{ '2' = 'Fixed'; '3' = 'Dynamic'; '4' = 'Differencing' }
    $format = 'Unknown'
    if ($formats.ContainsKey($settings['Format'])) { $format = $formats[$settings['Format']] }
    $type = 'Unknown'
    if ($types.ContainsKey($settings['Type'])) { $type = $types[$settings['Type']] }
    return @{
        Path = $path; ParentPath = [string]$settings['ParentPath']; VhdFormat = $format; VhdType = $type
        FileSize = [int64]$facts['FileSize']; Size = [int64]$settings['MaxInternalSize']
        DiskIdentifier = [string]$settings['VirtualDiskId']; Attached = ($facts['InUse'] -eq 'TRUE')
    }
}

# Marks $path and every parent in its chain as referenced by $owner, by its text and by its file
# identity. A chain that cannot be followed to its end (a parent missing, a share this session
# cannot reach, an identity or Get-VHD that cannot be read) is recorded as unread, so that no
# virtual disk passes for unused.
function Add-HvmChain([string]$path, [string]$owner) {
    $current = $path
    for ($depth = 0; $current -and $depth -lt 64; $depth++) {
        $key = Get-HvmRefKey $current
        if (-not $referenced.ContainsKey($key)) { $referenced[$key] = "a disk of VM '$owner'" }
        if ($walked.ContainsKey($key)) { return }
        $walked[$key] = $true
        $state = Get-HvmPathState $current
        if ($state -ne 'exists') {
            if ($depth -gt 0 -or $key.StartsWith('\\') -or $state -ne 'absent') {
                $unreadChains.Add("'$current' of VM '$owner' ($state)")
            }
            return
        }
        try {
            $referencedIds[(Get-HvmFileId $current)] = "a disk of VM '$owner' ('$current')"
            $vhd = Get-HvmVhd $current
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
            if (-not $d.Path) { continue }
            $referenced[(Get-HvmRefKey ([string]$d.Path))] = "an ISO file of VM '$owner'"
            # by identity too where it can be read; an ISO that cannot be is still kept by name
            try { $referencedIds[(Get-HvmFileId ([string]$d.Path))] = "an ISO file of VM '$owner'" } catch { $null = $_ }
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

# 2. Files. Compared with the references by text and by file identity; whatever cannot be read
# (the path, its identity, or Get-VHD of a virtual disk) is refused, never deleted on a guess.
foreach ($item in $paths) {
    $p = [string]$item
    $reason = Get-HvmFileRefusal $p
    if (-not $reason) {
        $state = Get-HvmPathState $p
        if ($state -eq 'absent') {
            $absent.Add($p)
            continue
        }
        if ($state -ne 'exists') {
            $reason = "cannot be checked: $state"
        } elseif ([System.IO.Directory]::Exists($p)) {
            $reason = 'is a folder; pass it in Folder'
        } else {
            $id = $null
            try { $id = Get-HvmFileId $p } catch { $reason = "its file identity cannot be read ($($_.Exception.Message))" }
            if ($id -and $referencedIds.ContainsKey($id)) {
                $reason = "referenced under another name: $($referencedIds[$id])"
            } elseif ($id -and $p -match '\.(a?vhdx?|vhds)$') {
                if ($unreadChains.Count -gt 0) {
                    $reason = "a virtual disk, and the chain of $($unreadChains[0]) could not be read, so it might be a parent"
                } else {
                    try {
                        $vhd = Get-HvmVhd $p
                        if ($vhd.Attached) { $reason = 'a virtual disk that is attached (in use)' }
                    } catch {
                        $reason = "Get-VHD failed, so it might be in use: $($_.Exception.Message)"
                    }
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

# Why folder $f is kept, or $null when it may go (it is empty and nothing lies inside it).
function Get-HvmFolderRefusal([string]$f) {
    $key = Get-HvmRefKey $f
    if (-not (Test-HvmAbsolutePath $f)) { return 'not an absolute path' }
    if ($key -eq (Get-HvmRefKey ([System.IO.Path]::GetPathRoot($f)))) { return 'the root of a volume or share' }
    foreach ($location in $locations) {
        if (Test-HvmInside $location.key $key) { return "the location '$($location.path)' of VM '$($location.owner)' lies inside" }
        if (Test-HvmInside $key $location.key) {
            foreach ($id in $location.ids) {
                if ($key.Contains($id)) { return "a folder of VM '$($location.owner)' in its location '$($location.path)'" }
            }
        }
    }
    foreach ($default in $hostDefaults) {
        if (Test-HvmInside $default $key) { return 'a default folder of this host lies inside' }
    }
    foreach ($fileKey in @($referenced.Keys)) {
        if ($fileKey.StartsWith($key + '\')) { return "holds a referenced file ($($referenced[$fileKey]))" }
    }
    $entries = @([System.IO.Directory]::GetFileSystemEntries($f))
    if ($entries.Count -gt 0) { return "not empty ($($entries.Count) entries)" }
    return $null
}

# 3. Folders, deepest first. A folder that cannot be read is kept with the reason: the files
# deleted above are reported whatever happens here.
$folderItems = [System.Collections.Generic.List[object]]::new()
foreach ($item in $folders) {
    $f = [string]$item
    $entry = @{ path = $f; depth = (Get-HvmPathKey $f).Split('\').Count }
    $folderItems.Add($entry)
}
$deepestFirst = @($folderItems | Sort-Object -Property @{ Expression = { $_.depth }; Descending = $true })
foreach ($item in $deepestFirst) {
    $f = $item.path
    $reason = $null
    try {
        $state = Get-HvmPathState $f
        if ($state -eq 'absent') {
            $absent.Add($f)
            continue
        }
        if ($state -ne 'exists') {
            $reason = "cannot be checked: $state"
        } elseif (-not [System.IO.Directory]::Exists($f)) {
            $reason = 'is a file; pass it in Path'
        } else {
            $reason = Get-HvmFolderRefusal $f
        }
        if (-not $reason) {
            [System.IO.Directory]::Delete($f)
            $foldersRemoved.Add($f)
            continue
        }
    } catch {
        $reason = "could not be checked or removed: $($_.Exception.Message)"
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
